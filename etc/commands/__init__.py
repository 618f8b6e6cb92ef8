"""One module per CLI command; shared option parsing and table printing live in ``common``."""
