-- Which model made each shape's vector: search compares only vectors of the model in use, and a
-- shape embedded by another model is embedded again when it is seen. Shapes stored before this
-- were embedded by the default model of the time, paraphrase-MiniLM-L3-v2 (no digest known).
ALTER TABLE shapes ADD COLUMN model text NOT NULL DEFAULT 'paraphrase-MiniLM-L3-v2';
ALTER TABLE shapes ALTER COLUMN model DROP DEFAULT;
CREATE INDEX shapes_model ON shapes (model);
