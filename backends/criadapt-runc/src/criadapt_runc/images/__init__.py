"""The image store of the runc backend: registry client, content store, layer unpacking."""
