"""The nbserve command: its verbs (main), the flags the magics share (arguments), and serving in
the background (background)."""
