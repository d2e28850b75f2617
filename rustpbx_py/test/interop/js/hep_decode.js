// Decodes HEP3 packets with hep-js (sipcapture's HEP library for Node.js),
// an implementation independent of rustpbx_py's encoder: reads one packet
// per line as hex on stdin, writes one JSON object per line on stdout
// (false when hep-js cannot decode the packet).
"use strict";
const HEPjs = require("hep-js");
const lines = require("fs").readFileSync(0, "utf8").split("\n").filter((l) => l.trim());
for (const line of lines) {
  const decoded = HEPjs.decapsulate(Buffer.from(line.trim(), "hex"));
  process.stdout.write(JSON.stringify(decoded) + "\n");
}
