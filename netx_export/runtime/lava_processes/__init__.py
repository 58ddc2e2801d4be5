"""Lava processes the runner needs beyond stock NetX (kept alone: Lava scans this folder for models)."""
