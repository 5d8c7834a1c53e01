-- The process that holds a node's name (`pid/start time` on its machine): a second daemon on
-- the same machine cannot take the name of a live one.
ALTER TABLE nodes ADD COLUMN process text NOT NULL DEFAULT '';
