"""Archives and where they come from: the reader, the torch-model-archiver writer, the unpacked
archive cache, the model store, live objects, and per-model requirements."""
