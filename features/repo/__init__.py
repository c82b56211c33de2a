"""The Feast repo of custlens: definitions only (Feast imports every module here)."""
