//! The Lua scripts of the Redis store.

use redis::Script;
use std::sync::LazyLock;

/// The Lua scripts; each checks and writes in one step, which Redis runs without interleaving.
pub(super) struct Scripts {
    pub(super) create_account: Script,
    pub(super) update_account: Script,
    pub(super) remove_account: Script,
    pub(super) hash_cas: Script,
    pub(super) start_transaction: Script,
    pub(super) create_by_reference: Script,
    pub(super) transaction_cas: Script,
    pub(super) create_transaction: Script,
    pub(super) index_stored_transactions: Script,
    pub(super) index_stored_fields: Script,
    pub(super) enqueue_command: Script,
    pub(super) prune_sorted_set: Script,
    pub(super) trim_list_head: Script,
    pub(super) hash_delete_if: Script,
    pub(super) remove_transaction: Script,
    pub(super) lease: Script,
    pub(super) rename_absent: Script,
    pub(super) append_feed: Script,
}

/// The Lua function that indexes a transaction written by the script it starts (see
/// [`super::index`]): `index_tx(k, id, station, open)` with `KEYS[k..k+3]` the account's transaction
/// ids, the station's, the open ones, and the stations with transactions.
macro_rules! index_tx {
    () => {
        r"
        local function index_tx(k, id, station, open)
            redis.call('ZADD', KEYS[k], id, id)
            redis.call('ZADD', KEYS[k + 1], id, id)
            if open == '1' then redis.call('ZADD', KEYS[k + 2], id, id) else redis.call('ZREM', KEYS[k + 2], id) end
            redis.call('SADD', KEYS[k + 3], station)
        end
        "
    };
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    // KEYS: account, email index, slug index, account ids. ARGV: account id, account JSON.
    create_account: Script::new(
        r"
        if redis.call('EXISTS', KEYS[2]) == 1 then return 'email' end
        if redis.call('EXISTS', KEYS[3]) == 1 then return 'slug' end
        redis.call('SET', KEYS[2], ARGV[1])
        redis.call('SET', KEYS[3], ARGV[1])
        redis.call('SET', KEYS[1], ARGV[2])
        redis.call('ZADD', KEYS[4], 0, ARGV[1])
        return 'ok'
        ",
    ),
    // KEYS: account, old email, new email, old slug, new slug. ARGV: JSON read, new JSON, account id.
    update_account: Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'retry' end
        if KEYS[2] ~= KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return 'email' end
        if KEYS[4] ~= KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then return 'slug' end
        if KEYS[2] ~= KEYS[3] then
            redis.call('DEL', KEYS[2])
            redis.call('SET', KEYS[3], ARGV[3])
        end
        if KEYS[4] ~= KEYS[5] then
            redis.call('DEL', KEYS[4])
            redis.call('SET', KEYS[5], ARGV[3])
        end
        redis.call('SET', KEYS[1], ARGV[2])
        return 'ok'
        ",
    ),
    // KEYS: account, its email index, its slug index, account ids. ARGV: JSON read, account id.
    // The slug stays, linked to nothing: it is reserved.
    remove_account: Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1])
        if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
        redis.call('SET', KEYS[3], '')
        redis.call('ZREM', KEYS[4], ARGV[2])
        return 1
        ",
    ),
    // KEYS: hash. ARGV: field, value read, new value.
    hash_cas: Script::new(
        r"
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
        return 1
        ",
    ),
    // KEYS: start index, transactions, then the four transaction indexes. ARGV: start field, new id,
    // new JSON, station id. Returns the id of the transaction with this start and its record.
    start_transaction: Script::new(concat!(
        index_tx!(),
        r"
        local existing = redis.call('HGET', KEYS[1], ARGV[1])
        if existing then return {existing, redis.call('HGET', KEYS[2], existing)} end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
        index_tx(3, ARGV[2], ARGV[4], '1')
        return {ARGV[2], ARGV[3]}
        "
    )),
    // KEYS: reference index, transactions, then the four transaction indexes. ARGV: reference field,
    // new id, new JSON, station id, open (1 or 0).
    create_by_reference: Script::new(concat!(
        index_tx!(),
        r"
        if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
        index_tx(3, ARGV[2], ARGV[4], ARGV[5])
        return 1
        "
    )),
    // KEYS: transactions, then the four transaction indexes. ARGV: id, JSON read, new JSON, station id,
    // open (1 or 0).
    transaction_cas: Script::new(concat!(
        index_tx!(),
        r"
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
        index_tx(2, ARGV[1], ARGV[4], ARGV[5])
        return 1
        "
    )),
    // KEYS: transactions, then the four transaction indexes. ARGV: id, JSON, station id, open (1 or 0).
    create_transaction: Script::new(concat!(
        index_tx!(),
        r"
        if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
        index_tx(2, ARGV[1], ARGV[3], ARGV[4])
        return 1
        "
    )),
    // Indexes transactions stored before the indexes existed. KEYS: transactions, then the four
    // transaction indexes of one station. ARGV: the station id, then (id, JSON read, open) for each
    // transaction. One rewritten since it was read was indexed by its writer and is passed over.
    index_stored_transactions: Script::new(concat!(
        index_tx!(),
        r"
        local n = 0
        for i = 2, #ARGV, 3 do
            if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
                index_tx(2, ARGV[i], ARGV[1], ARGV[i + 2])
                n = n + 1
            end
        end
        return n
        "
    )),
    // Indexes hash fields stored before the index existed. KEYS: hash, its index (a sorted set by
    // field). ARGV: fields. One deleted since it was read is passed over.
    index_stored_fields: Script::new(
        r"
        local n = 0
        for i = 1, #ARGV do
            if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
                redis.call('ZADD', KEYS[2], 0, ARGV[i])
                n = n + 1
            end
        end
        return n
        ",
    ),
    // KEYS: commands, station queue, queue stations, the account's queue sequence, command fields.
    // ARGV: record field, record JSON, command id, station id. Queueing the same command again keeps
    // its place.
    enqueue_command: Script::new(
        r"
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('ZADD', KEYS[5], 0, ARGV[1])
        if not redis.call('ZSCORE', KEYS[2], ARGV[3]) then
            redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[3])
        end
        redis.call('SADD', KEYS[3], ARGV[4])
        return 1
        ",
    ),
    // KEYS: a sorted set, the set that lists it, and optionally a sorted set that lists it too.
    // ARGV: the exclusive bound (`(score`), the sorted set's member in the listing set, and in the
    // optional one. Removes the members scored below the bound; once the sorted set is empty (Redis
    // then deletes it), it leaves the lists. Returns how many it removed.
    prune_sorted_set: Script::new(
        r"
        local n = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
        if redis.call('EXISTS', KEYS[1]) == 0 then
            redis.call('SREM', KEYS[2], ARGV[2])
            if KEYS[3] then redis.call('ZREM', KEYS[3], ARGV[3]) end
        end
        return n
        ",
    ),
    // KEYS: a list. ARGV: n, the n-th element as read. Drops the first n elements if the n-th is still
    // the one read; returns how many it dropped.
    trim_list_head: Script::new(
        r"
        local n = tonumber(ARGV[1])
        if redis.call('LINDEX', KEYS[1], n - 1) ~= ARGV[2] then return 0 end
        redis.call('LTRIM', KEYS[1], n, -1)
        return n
        ",
    ),
    // KEYS: transactions, the account's transaction ids, the station's, the start index, the reference
    // index, the transaction's readings, the account's reading keys. ARGV: id, the record as read,
    // its start field ('' for none), its reference field ('' for none), its reading-keys member.
    // Removes the transaction, its index entries and its readings if the record is still the one
    // read; returns 1 then, else 0.
    remove_transaction: Script::new(
        r"
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('HDEL', KEYS[1], ARGV[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        redis.call('ZREM', KEYS[3], ARGV[1])
        if ARGV[3] ~= '' then redis.call('HDEL', KEYS[4], ARGV[3]) end
        if ARGV[4] ~= '' then redis.call('HDEL', KEYS[5], ARGV[4]) end
        redis.call('UNLINK', KEYS[6])
        redis.call('SREM', KEYS[7], ARGV[5])
        return 1
        ",
    ),
    // KEYS: the lease. ARGV: holder, time to live (ms). Renews the lease when the holder has it, takes
    // it when nobody does; returns 1 when the holder has it now, else 0.
    lease: Script::new(
        r"
        local current = redis.call('GET', KEYS[1])
        if current == ARGV[1] then
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
            return 1
        end
        if current then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return 1
        ",
    ),
    // KEYS: a key, its new name, and optionally the sorted set of account ids. ARGV: with that set,
    // the id to add to it. Renames the key unless it is gone (0) or the new name is taken (-1).
    // Runs on a single Redis only (the keys are in different slots).
    rename_absent: Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
        redis.call('RENAME', KEYS[1], KEYS[2])
        if KEYS[3] then redis.call('ZADD', KEYS[3], 0, ARGV[1]) end
        return 1
        ",
    ),
    // KEYS: an account's feed (a stream), its id sequence, the last sequence applied from each
    // origin (a hash). ARGV: the origin's sequence ('' for an append without an origin), the origin,
    // then the JSON of each draft. Appends the drafts in order, each as the JSON of its event under
    // the entry id `0-{id}`, with `id` taken from the sequence in the same step: ids reach the stream
    // in order. With an origin, appends only if the sequence is above the last one applied from it,
    // and records it. Returns how many it appended.
    //
    // Sequences are u64 in decimal without leading zeros, compared by length, then by character:
    // exact over the whole range, where a Lua number (a double) is exact only below 2^53. The ids
    // are Lua numbers (INCR's answer), exact for the first 2^53 events of an account; `%d` writes
    // them in full where concatenation would switch to exponent notation past 10^14. An event's
    // JSON is the draft's with `"id":{id},` after its opening brace (see `feed::draft_json`). The
    // origin is recorded last: an append that fails half-way (Redis does not undo a script's
    // writes) is not taken as applied, and a retry may repeat events rather than lose them.
    append_feed: Script::new(
        r#"
        local function above(a, b)
            if #a ~= #b then return #a > #b end
            return a > b
        end
        local seq, origin = ARGV[1], ARGV[2]
        if seq ~= '' then
            local last = redis.call('HGET', KEYS[3], origin)
            if last and not above(seq, last) then return 0 end
        end
        for i = 3, #ARGV do
            local id = string.format('%d', redis.call('INCR', KEYS[2]))
            redis.call('XADD', KEYS[1], '0-' .. id, 'e', '{"id":' .. id .. ',' .. string.sub(ARGV[i], 2))
        end
        if seq ~= '' then redis.call('HSET', KEYS[3], origin, seq) end
        return #ARGV - 2
        "#,
    ),
    // KEYS: hash, the sorted set that indexes its fields. ARGV: field, value read. Deletes the field
    // and its index entry if it still holds the value read.
    hash_delete_if: Script::new(
        r"
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('HDEL', KEYS[1], ARGV[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        return 1
        ",
    ),
});
