"""Scan engines: one interface (base.Engine), the in-process one (local) and Ray Data (ray)."""
