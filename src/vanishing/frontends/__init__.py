"""The front doors: the command line, the Python API and the live page, adapters over `jobs`."""
