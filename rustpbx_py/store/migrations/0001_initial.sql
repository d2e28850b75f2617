-- The schema is built by the files after this one; this one only marks version 1.
SELECT 1;
