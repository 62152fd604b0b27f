-- Ciphertexts bound to their team (issue 16): format 2 adds team_id to the
-- associated data (storage/cipher.hpp). Format-1 values, sealed before,
-- stay readable until `connector-manager rekey` has re-sealed every one of
-- them; it then sets unbound_refused_since and from that moment every
-- instance refuses format 1 like a tampered value (a format-1 value that
-- appears later can only be a copy).
--
-- A database that holds no ciphertext yet has nothing to migrate: it
-- refuses format 1 from the start.
--
-- Not team data: with Citus this is a reference table (docs/STORAGE.md).
CREATE TABLE cipher_formats (
  singleton               boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
  unbound_refused_since   timestamptz
);
INSERT INTO cipher_formats (unbound_refused_since)
SELECT CASE WHEN EXISTS (SELECT 1 FROM connector_tokens)
              OR EXISTS (SELECT 1 FROM connector_configs WHERE secrets IS NOT NULL)
              OR EXISTS (SELECT 1 FROM oauth_states WHERE code_verifier IS NOT NULL)
            THEN NULL ELSE now() END;
