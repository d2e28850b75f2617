"""
rustpbx_py: a SIP PBX built on Twisted that reads RustPBX's configuration.

Run it with C{twistd pbx --config etc/pbx.toml}.
"""

__version__ = "0.1.0"
