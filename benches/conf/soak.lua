-- wrk script for benches/soak.sh: a rotation of ten request kinds. wrk does
-- not say which request a response answers, so the check is by status:
-- every kind may only get 200, 401 (auth failures: 2 of 10), 403 (WAF
-- blocks: 2 of 10), 429 (the rate-limited kind) or 502 (the down backend:
-- 1 of 10); anything else, and every socket error, is unexpected.
local key = os.getenv("SOAK_KEY") or ""
local kinds = {
    { "/cached/item", {} },                                  -- cache hit
    { "/cached/item?v={n}", {} },                           -- cache miss
    { "/auth/orders", { ["x-api-key"] = key } },             -- admitted
    { "/auth/orders", {} },                                  -- 401
    { "/auth/orders", { ["x-api-key"] = "wrong" } },         -- 401
    { "/limited/x", {} },                                    -- 200 or 429
    { "/search?q=1%27%20OR%20%271%27%3D%271", {} },          -- WAF 403
    { "/x?cmd=%3Bcat%20%2Fetc%2Fpasswd", {} },               -- WAF 403
    { "/broken/x", {} },                                     -- 502
    { "/plain/{n}", {} },                                   -- 200
}
local expected = { [200] = true, [401] = true, [403] = true, [429] = true, [502] = true }
local n = 0
counts, unexpected = {}, 0
request = function()
    n = n + 1
    local k = kinds[(n % #kinds) + 1]
    return wrk.format("GET", (k[1]:gsub("{n}", tostring(n % 1000))), k[2])
end
response = function(status, headers, body)
    counts[status] = (counts[status] or 0) + 1
    if not expected[status] then unexpected = unexpected + 1 end
end
local threads = {}
setup = function(t) table.insert(threads, t) end
done = function(summary, latency, requests)
    local all, bad = {}, 0
    for _, t in ipairs(threads) do
        for s, c in pairs(t:get("counts")) do all[s] = (all[s] or 0) + c end
        bad = bad + t:get("unexpected")
    end
    for s, c in pairs(all) do
        print(string.format("status %d %d (%.1f%%)", s, c, 100 * c / summary.requests))
    end
    local e = summary.errors
    local sock = e.connect + e.read + e.write + e.timeout
    print(string.format("socket_errors %d", sock))
    print(string.format("unexpected %d", bad + sock))
end
