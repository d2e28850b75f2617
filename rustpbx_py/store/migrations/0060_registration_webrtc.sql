-- Whether a binding is a WebRTC endpoint (RustPBX's location
-- supports_webrtc): registered over WS/WSS (RFC 7118), or its user has
-- is_support_webrtc.  Calls to it get a WebRTC offer (DTLS-SRTP, ICE-lite)
-- from the media engine.  Rows written before this migration are not.
ALTER TABLE registrations ADD COLUMN webrtc INTEGER NOT NULL DEFAULT 0;
