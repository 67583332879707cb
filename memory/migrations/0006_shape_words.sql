-- The words of each shape, for the full-text half of a hybrid search: matched and ranked with
-- PostgreSQL's `english` configuration (stop words dropped, Snowball stems), looked up through
-- a GIN index. The in-process memory computes the same words (memory/src/words.rs).
ALTER TABLE shapes
    ADD COLUMN words tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED;
CREATE INDEX shapes_words ON shapes USING gin (words);

-- A search's words joined by OR: `swarm_any_words(plainto_tsquery('simple', lexeme))` over the
-- lexemes of `to_tsvector('english', probe)`. Built from the lexemes, not by editing a query's
-- text, so no probe text can make an invalid query.
CREATE AGGREGATE swarm_any_words (tsquery) (SFUNC = tsquery_or, STYPE = tsquery);
