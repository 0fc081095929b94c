-- Example 10's source table: 1,000 items in MariaDB.
CREATE TABLE example_items (
    id int PRIMARY KEY,
    name varchar(40) NOT NULL,
    qty int NOT NULL,
    price decimal(10, 2),
    updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
);
INSERT INTO example_items (id, name, qty, price)
    SELECT seq, CONCAT('item ', seq), seq % 50, seq * 1.25 FROM seq_1_to_1000;
