"""The twistd entry point: C{twistd pbx --config etc/pbx.toml}."""

from twisted.application.service import ServiceMaker

pbx = ServiceMaker(
    "rustpbx_py SIP PBX",
    "rustpbx_py.tap",
    "A SIP PBX (registrar, B2BUA, trunks) configured with RustPBX's TOML.",
    "pbx",
)
