-- Example 9's table and publication, in the `postgres` database:
--
--   psql -h 127.0.0.1 -U postgres -f examples/09-postgres-cdc-to-parquet/setup.sql
--
-- The server needs wal_level = logical (scripts/postgres-setup sets it on this machine)
-- and the role REPLICATION (role `postgres` has it).
DROP PUBLICATION IF EXISTS example_items_pub;
DROP TABLE IF EXISTS example_items;
CREATE TABLE example_items (
    id int PRIMARY KEY,
    name text NOT NULL,
    qty int NOT NULL,
    price numeric(10,2),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO example_items (id, name, qty, price)
SELECT g, 'item ' || g, g % 7, round((g % 997) / 10.0, 2)
FROM generate_series(1, 1000) AS g;
CREATE PUBLICATION example_items_pub FOR TABLE example_items;
