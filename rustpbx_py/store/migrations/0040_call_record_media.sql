-- The media plane's part of a call record (issue 13): the media_proxy
-- decision, and for an anchored call each leg's codec, latched address,
-- and packets, bytes, loss and jitter per direction, as JSON text.  NULL
-- for calls that never got as far as an offer (and for rows written
-- before this migration, which keep working).
ALTER TABLE call_records ADD COLUMN media TEXT;
