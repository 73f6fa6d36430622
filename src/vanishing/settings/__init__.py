"""Settings: every training setting declared once, parsed once, and named once."""
