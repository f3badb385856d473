/**
 * SQLite schema changes, applied in order. Each entry runs once; `openSqliteStore` records the
 * applied versions in `schema_migrations` and in `PRAGMA user_version`. Append new entries and
 * never edit one that has shipped.
 */
export interface Migration {
  version: number
  name: string
  sql: string
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE TABLE resources (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        json TEXT NOT NULL,
        updated TEXT NOT NULL,
        token_hash TEXT,
        PRIMARY KEY (kind, name)
      );
      CREATE INDEX resources_token_hash ON resources (token_hash) WHERE token_hash IS NOT NULL;

      CREATE TABLE policy_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
      );
      INSERT INTO policy_version (id, version) VALUES (1, 0);

      CREATE TABLE used_join_tokens (
        token_hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        used_at TEXT NOT NULL
      );

      CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        bot_instance TEXT,
        generation INTEGER,
        parent_serial TEXT,
        recorded TEXT NOT NULL
      );
      CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id);

      CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        time TEXT NOT NULL,
        type TEXT NOT NULL,
        outcome TEXT NOT NULL,
        principal TEXT,
        server TEXT,
        tool TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        -- The event's other fields as JSON; each field is stored in one place only.
        json TEXT NOT NULL
      );
      CREATE INDEX audit_time ON audit (time);
      CREATE INDEX audit_principal ON audit (principal);
      CREATE INDEX audit_server_tool ON audit (server, tool);
      CREATE INDEX audit_outcome ON audit (outcome);
      CREATE INDEX audit_type ON audit (type);

      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      );
    `,
  },
]
