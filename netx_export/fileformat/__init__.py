"""The NetX file: what is written, read and refused."""
