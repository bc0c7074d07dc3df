"""Workers in processes of their own: the supervisor in the server, the child that serves, and the
messages between them."""
