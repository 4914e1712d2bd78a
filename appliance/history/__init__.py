"""Past sessions and recordings on this device: found, read and exported (CLI and page)."""
