-- Moving memory to another embedding model.
--
-- `memory_model` names the model whose vectors the shapes hold (one row). A writer embedding
-- with another model adds the shapes memory lacks with its own vectors, but never replaces a
-- vector of this model; search compares only vectors of the searcher's model.
CREATE TABLE memory_model (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    model       text NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO memory_model (model)
    SELECT model FROM shapes GROUP BY model ORDER BY count(*) DESC, model LIMIT 1;

-- A reindex writes the new model's vectors here, shape by shape, while search keeps answering
-- from `shapes`; a reindex that stops resumes from what is here. When every shape has one, one
-- transaction moves them into `shapes` and names the new model in `memory_model`.
CREATE TABLE reindex_vectors (
    shape_id  bigint PRIMARY KEY REFERENCES shapes (id) ON DELETE CASCADE,
    model     text NOT NULL,
    embedding halfvec(384) NOT NULL
);
