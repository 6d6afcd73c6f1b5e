"""Scan engines other than the in-process one (forensics.scan)."""
