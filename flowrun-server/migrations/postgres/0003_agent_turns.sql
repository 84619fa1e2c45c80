-- Agent turns, committed as each completes, so a resumed agent goes on after the last.
CREATE TABLE agent_turns (
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_index  BIGINT NOT NULL,
    turn        BIGINT NOT NULL,
    record      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_index, turn)
);
