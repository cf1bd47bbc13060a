"""The Portico server: domain, storage, HTTP surfaces and commands. Never imports Qt."""

__version__ = "0.1.0"
