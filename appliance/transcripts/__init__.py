"""What a session or recording said, as one model, and the files made from it (pure, no I/O)."""
