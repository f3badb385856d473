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
  {
    version: 2,
    name: 'locks and bot instance generations',
    sql: `
      CREATE TABLE locks (
        id TEXT PRIMARY KEY,
        target_kind TEXT NOT NULL,
        target_value TEXT NOT NULL,
        message TEXT NOT NULL,
        created TEXT NOT NULL,
        expires TEXT,
        created_by TEXT NOT NULL
      );

      CREATE TABLE lock_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
      );
      INSERT INTO lock_version (id, version) VALUES (1, 0);

      -- Renewal reads the newest generation issued to a bot instance.
      CREATE INDEX certificates_bot_instance ON certificates (bot_instance, generation)
        WHERE bot_instance IS NOT NULL;
    `,
  },
  {
    version: 3,
    name: 'people: credentials, enrollment codes, login throttling, single sign-on',
    sql: `
      CREATE TABLE user_credentials (
        user_name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        -- Base32. NOTE: stored as is, protected only by the file mode of the database.
        totp_secret TEXT NOT NULL,
        last_totp_step INTEGER,
        enrolled_at TEXT NOT NULL
      );

      CREATE TABLE enrollment_codes (
        code_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        -- Epoch milliseconds.
        expires_at INTEGER NOT NULL,
        used_at TEXT
      );
      CREATE INDEX enrollment_codes_user ON enrollment_codes (user_name);

      CREATE TABLE login_failures (
        throttle_key TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        last_failure_at INTEGER NOT NULL
      );

      CREATE TABLE sso_flows (
        state_hash TEXT PRIMARY KEY,
        connector TEXT NOT NULL,
        nonce TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        -- Times in epoch milliseconds.
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
      );
    `,
  },
  {
    version: 4,
    name: 'access requests',
    sql: `
      CREATE TABLE access_requests (
        id TEXT PRIMARY KEY,
        requester TEXT NOT NULL,
        requester_kind TEXT NOT NULL,
        -- JSON list of requested role names.
        roles TEXT NOT NULL,
        reason TEXT NOT NULL,
        ttl_seconds INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied')),
        -- Times in epoch milliseconds.
        created INTEGER NOT NULL,
        reviewer TEXT,
        review_reason TEXT,
        decided INTEGER,
        expires INTEGER
      );
      CREATE INDEX access_requests_created ON access_requests (created);
    `,
  },
  {
    version: 5,
    name: 'tool call approvals',
    sql: `
      CREATE TABLE tool_approvals (
        id TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        -- The bot instance, or the certificate serial for callers without one.
        binding TEXT NOT NULL,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        args_digest TEXT NOT NULL,
        -- JSON copy of the arguments with secrets redacted, shown to the approver.
        args TEXT NOT NULL,
        rule TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'used')),
        -- Times in epoch milliseconds.
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        decided_by TEXT,
        decision_reason TEXT,
        decided INTEGER,
        used INTEGER
      );
      CREATE INDEX tool_approvals_caller ON tool_approvals (spiffe_id, state);
      CREATE INDEX tool_approvals_created ON tool_approvals (created);
    `,
  },
  {
    version: 6,
    name: 'tool pins',
    sql: `
      CREATE TABLE tool_pins (
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('approved', 'pending', 'quarantined')),
        -- sha256:<hex> of the canonical JSON of the definition last seen, and of the approved one.
        digest TEXT NOT NULL,
        approved_digest TEXT,
        definition TEXT NOT NULL,
        -- JSON list of description linter findings on the definition last seen.
        findings TEXT NOT NULL,
        -- Times in epoch milliseconds.
        first_seen INTEGER NOT NULL,
        changed INTEGER NOT NULL,
        approved_by TEXT,
        approved_at INTEGER,
        PRIMARY KEY (server, tool)
      );

      CREATE TABLE tool_pin_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
      );
      INSERT INTO tool_pin_version (id, version) VALUES (1, 0);
    `,
  },
]
