ALTER TABLE predictions DROP COLUMN reasons;
