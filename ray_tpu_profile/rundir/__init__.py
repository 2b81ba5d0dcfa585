"""The run directory: its layout, manifest and safe paths, on local disk or at a remote URL."""
