-- transfer-gate: the atomic conditional reservation of the Redis ledger (and its read-only
-- probe). One call per request that carries subjects not known locally. Every key of one
-- entity shares the hash tag of KEYS[1], so the script runs unchanged on Redis Cluster.
--
-- Data model (per scope s, subject key k = 16 raw bytes, Asia/Shanghai year y):
--   Y(s, y)  hash  k -> "0" | "1"   k was counted in s in year y ("1": as sensitive);
--                                   expires once no window can contain y.
--   N(s)     hash  "a:<y>" / "s:<y>" -> subjects whose last year (last sensitive year) is y.
--   M        hash  "<scope>|<y>|<m>|a" / "|s" -> newly counted in that month.
-- A window is [start, cur] with start = cur (cac-2024) or cur - 1 (cac-2022); its count is
-- the sum of N over the years >= start, so a subject seen in both years counts once.
--
-- KEYS[1] = M; for scope i (1-based): KEYS[3i-1] = Y(s_i, cur), KEYS[3i] = Y(s_i, cur - 1),
--           KEYS[3i+1] = N(s_i).
-- ARGV[1] mode: "r" reserve, "p" probe        ARGV[2] cur year     ARGV[3] window start year
-- ARGV[4] month                               ARGV[5] EXPIREAT (unix s) for Y(., cur)
-- ARGV[6] number of scopes ns                 ARGV[7] subject keys, 16 bytes each
-- ARGV[8] one char per subject, "1" = sent as sensitive
-- ARGV[9] number of ceilings nc, then 4 per ceiling: owner (0 = every alternative, k = the
--         k-th alternative), scope index (1-based), "a"|"s", max after
-- then the number of alternatives na, then per alternative its extra scope index (0 = none);
-- then ns scope names (for the monthly tally fields).
--
-- Alternatives (the approvals a request may rely on, in order of preference): a scope named
-- by an alternative is counted into only when that alternative is chosen; every other scope
-- always. Chosen: the first alternative whose ceilings hold and whose scope gains nothing
-- (it costs no volume), else the first whose ceilings hold; with na = 0, none is needed.
--
-- Reply: {1, states, then per scope new_all, new_sensitive, all_before, sensitive_before,
--   then the chosen alternative (1-based, 0 = none)} where states has one char per
--   (subject, scope) after the call: "0" absent this year, "1" counted this year, "2" counted
--   this year as sensitive; a scope not counted into reports new_all = new_sensitive = 0;
-- or (reserve refused, nothing written): {0, ceiling index (1-based), count_before, new}:
--   a common ceiling, else the first refusal on an alternative's own scope, else the first.
--
-- Loss detection (every mode). The last key is always the namespace's meta hash, whose field
-- `gen` (the namespace generation, created with the namespace and again after a loss) is the
-- namespace marker and whose field `v` counts the writing calls. The last three ARGV are what
-- the caller last asserted into: gen, the server's run id (INFO server; a restart or failover
-- changes it), and the `v` it last saw. When any differs (marker gone or changed, another
-- server process, fewer writes than already seen) the reply is {2, gen, run id, v} and
-- nothing is read or written: the caller must first re-assert its journal.
-- Mode "i" (KEYS = {meta}, ARGV = {"i"}) only replies {3, gen, run id, v}.
-- Mode "a" re-asserts journal entries of one scope, never refused by ceilings (they are
-- subjects that were already counted and forwarded): KEYS = {M, Y(s, cur), Y(s, cur - 1),
-- N(s), meta}; ARGV[2] cur year, ARGV[3] EXPIREAT for Y(s, cur), ARGV[4] EXPIREAT for
-- Y(s, cur - 1), ARGV[5] subject keys, ARGV[6] two chars per subject: its last year and last
-- sensitive year in the journal, "c" = cur, "p" = cur - 1, "n" = never (sensitive only); then
-- gen, run id, v. Each subject ends with the later of Redis's and the journal's years, per
-- class; counters move with it. Reply {1, subjects added, sensitive subjects added}.

local mode = ARGV[1]

local function reassert()
  local cur = tonumber(ARGV[2])
  local years = {tostring(cur - 1), tostring(cur)}
  local yc, yp, cnt = KEYS[2], KEYS[3], KEYS[4]
  local blob, marks = ARGV[5], ARGV[6]
  local rank = {n = 0, p = 1, c = 2}
  local added_all, added_sens, touched_c, touched_p = 0, 0, false, false
  -- A subject's last year of `class` ("a" | "s") moves from years[from] (0: none) to years[to].
  local function move_counter(class, from, to)
    if from > 0 then
      redis.call('HINCRBY', cnt, class .. ':' .. years[from], -1)
    end
    redis.call('HINCRBY', cnt, class .. ':' .. years[to], 1)
  end
  for j = 1, #marks / 2 do
    local k = string.sub(blob, 16 * j - 15, 16 * j)
    local c = redis.call('HGET', yc, k)
    local p = redis.call('HGET', yp, k)
    -- 2 = this year, 1 = last year, 0 = never (in this window)
    local had_all = c and 2 or (p and 1 or 0)
    local had_sens = (c == '1') and 2 or ((p == '1') and 1 or 0)
    local all = math.max(had_all, rank[string.sub(marks, 2 * j - 1, 2 * j - 1)])
    local sens = math.max(had_sens, rank[string.sub(marks, 2 * j, 2 * j)])
    if all == 2 then
      local want = (sens == 2) and '1' or '0'
      if c ~= want then
        redis.call('HSET', yc, k, want)
        touched_c = true
      end
    end
    local want_p = p
    if sens == 1 then
      want_p = '1'
    elseif all == 1 and not p then
      want_p = '0'
    end
    if want_p ~= p then
      redis.call('HSET', yp, k, want_p)
      touched_p = true
    end
    if all ~= had_all then
      if had_all == 0 then
        added_all = added_all + 1
      end
      move_counter('a', had_all, all)
    end
    if sens ~= had_sens then
      if had_sens == 0 then
        added_sens = added_sens + 1
      end
      move_counter('s', had_sens, sens)
    end
  end
  if touched_c then
    redis.call('EXPIREAT', yc, ARGV[3])
  end
  if touched_p then
    redis.call('EXPIREAT', yp, ARGV[4])
  end
  redis.call('HINCRBY', KEYS[#KEYS], 'v', 1)
  return {1, added_all, added_sens}
end

do
  local meta = KEYS[#KEYS]
  local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
  local gen = redis.call('HGET', meta, 'gen') or ''
  local v = tonumber(redis.call('HGET', meta, 'v') or '0')
  if mode == 'i' then
    return {3, gen, run_id, v}
  end
  if gen == '' or gen ~= ARGV[#ARGV - 2] or run_id ~= ARGV[#ARGV - 1]
      or v < tonumber(ARGV[#ARGV]) then
    return {2, gen, run_id, v}
  end
  if mode == 'a' then
    return reassert()
  end
end
local cur = tonumber(ARGV[2])
local start = tonumber(ARGV[3])
local month = ARGV[4]
local expire_at = ARGV[5]
local ns = tonumber(ARGV[6])
local keys = ARGV[7]
local flags = ARGV[8]
local nc = tonumber(ARGV[9])
local n = #flags
local two_years = start < cur

local new_all, new_sens, before_all, before_sens = {}, {}, {}, {}
for i = 1, ns do
  new_all[i], new_sens[i], before_all[i], before_sens[i] = 0, 0, 0, 0
  local fields = redis.call('HGETALL', KEYS[3 * i + 1])
  for f = 1, #fields, 2 do
    local name = fields[f]
    local year = tonumber(string.sub(name, 3))
    if year ~= nil and year >= start then
      local v = tonumber(fields[f + 1])
      if string.sub(name, 1, 1) == 'a' then
        before_all[i] = before_all[i] + v
      else
        before_sens[i] = before_sens[i] + v
      end
    end
  end
end

-- First pass: read every (subject, scope) state; nothing is written yet.
-- For each pair remember: 0 = unchanged, otherwise what to write.
local cur_v, prev_v = {}, {}
for j = 1, n do
  local k = string.sub(keys, 16 * j - 15, 16 * j)
  local sensitive = string.sub(flags, j, j) == '1'
  for i = 1, ns do
    local c = redis.call('HGET', KEYS[3 * i - 1], k)
    local p = redis.call('HGET', KEYS[3 * i], k)
    local idx = (j - 1) * ns + i
    cur_v[idx] = c
    prev_v[idx] = p
    local in_window = c or (two_years and p)
    if not in_window then
      new_all[i] = new_all[i] + 1
    end
    if sensitive and not (c == '1' or (two_years and p == '1')) then
      new_sens[i] = new_sens[i] + 1
    end
  end
end

local na = tonumber(ARGV[10 + 4 * nc])
local alt_scope, optional = {}, {}
for a = 1, na do
  alt_scope[a] = tonumber(ARGV[10 + 4 * nc + a])
  if alt_scope[a] > 0 then
    optional[alt_scope[a]] = true
  end
end

-- The first ceiling of `owner` that the request would cross: index, before, new.
local function crossed(owner)
  for c = 1, nc do
    local base = 9 + 4 * (c - 1)
    if tonumber(ARGV[base + 1]) == owner then
      local i = tonumber(ARGV[base + 2])
      local before, new = before_all[i], new_all[i]
      if ARGV[base + 3] == 's' then
        before, new = before_sens[i], new_sens[i]
      end
      if new > 0 and before + new > tonumber(ARGV[base + 4]) then
        return {c, before, new}
      end
    end
  end
  return nil
end

local chosen = 0
if mode == 'r' then
  local r = crossed(0)
  if r then
    return {0, r[1], r[2], r[3]}
  end
  local first_fit, report, report_own = nil, nil, false
  for a = 1, na do
    local s = alt_scope[a]
    local refused = crossed(a)
    if not refused then
      if s == 0 or new_all[s] + new_sens[s] == 0 then
        chosen = a
        break
      end
      first_fit = first_fit or a
    else
      local base = 9 + 4 * (refused[1] - 1)
      local own = s > 0 and tonumber(ARGV[base + 2]) == s
      if not report or (own and not report_own) then
        report, report_own = refused, own
      end
    end
  end
  if chosen == 0 and na > 0 then
    if not first_fit then
      return {0, report[1], report[2], report[3]}
    end
    chosen = first_fit
  end
end

-- Whether scope i is counted into: always, unless only an alternative not chosen names it.
local function counted(i)
  return mode == 'r' and (not optional[i] or (chosen > 0 and alt_scope[chosen] == i))
end

local states = {}
local names = 10 + 4 * nc + na
local cur_s = tostring(cur)
local prev_s = tostring(cur - 1)
for i = 1, ns do
  local touched = false
  for j = 1, n do
    local idx = (j - 1) * ns + i
    local sensitive = string.sub(flags, j, j) == '1'
    local c, p = cur_v[idx], prev_v[idx]
    if counted(i) then
      local k = string.sub(keys, 16 * j - 15, 16 * j)
      -- New this year, or newly sensitive this year: the subject's last year (last
      -- sensitive year) moves from last year (if it was there) to this one.
      if not c or (sensitive and c ~= '1') then
        local want = sensitive and '1' or '0'
        redis.call('HSET', KEYS[3 * i - 1], k, want)
        touched = true
        if not c then
          if p then
            redis.call('HINCRBY', KEYS[3 * i + 1], 'a:' .. prev_s, -1)
          end
          redis.call('HINCRBY', KEYS[3 * i + 1], 'a:' .. cur_s, 1)
        end
        if sensitive then
          if p == '1' then
            redis.call('HINCRBY', KEYS[3 * i + 1], 's:' .. prev_s, -1)
          end
          redis.call('HINCRBY', KEYS[3 * i + 1], 's:' .. cur_s, 1)
        end
        c = want
      end
    end
    if not c then
      states[idx] = '0'
    elseif c == '1' then
      states[idx] = '2'
    else
      states[idx] = '1'
    end
  end
  if touched then
    redis.call('EXPIREAT', KEYS[3 * i - 1], expire_at)
  end
  if mode == 'r' and not counted(i) then
    new_all[i], new_sens[i] = 0, 0
  end
  if counted(i) and (new_all[i] > 0 or new_sens[i] > 0) then
    local field = ARGV[names + i] .. '|' .. cur_s .. '|' .. month
    if new_all[i] > 0 then
      redis.call('HINCRBY', KEYS[1], field .. '|a', new_all[i])
    end
    if new_sens[i] > 0 then
      redis.call('HINCRBY', KEYS[1], field .. '|s', new_sens[i])
    end
  end
end

if mode == 'r' then
  redis.call('HINCRBY', KEYS[#KEYS], 'v', 1)
end

local reply = {1, table.concat(states)}
for i = 1, ns do
  reply[#reply + 1] = new_all[i]
  reply[#reply + 1] = new_sens[i]
  reply[#reply + 1] = before_all[i]
  reply[#reply + 1] = before_sens[i]
end
reply[#reply + 1] = chosen
return reply
