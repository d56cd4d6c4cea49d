-- depends: 0004.app-role
-- Reason codes: why a prediction scored as it did, kept with it (the answer an analyst or an
-- adverse-action notice needs later). A JSON array of {"feature", "value", "contribution"},
-- largest contribution first; null when the prediction was not explained (by default only
-- flagged predictions and the ones whose caller asked are). The API's INSERT grant on the
-- table covers the new column.
ALTER TABLE predictions ADD COLUMN reasons jsonb
    CHECK (reasons IS NULL OR jsonb_typeof(reasons) = 'array');
