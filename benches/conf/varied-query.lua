-- wrk script: every request has a query the gateway has not seen before
-- (a running page number and a random id) plus a search phrase from a
-- small list, so that a WAF cannot answer it from what it remembered of
-- earlier requests. Used by `benches/policy-load.sh ... --scenarios varied`.
local words = { "blue", "shoes", "red", "dress", "running", "jacket", "leather",
    "boots", "wool", "scarf", "summer", "sale", "kids", "size", "black", "white" }
local n = 0
math.randomseed(os.time())
request = function()
    n = n + 1
    local q = words[math.random(#words)] .. "+" .. words[math.random(#words)]
    local path = string.format("/?page=%d&q=%s&sort=-created_at&id=%08x%08x",
        n, q, math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
    return wrk.format("GET", path)
end
