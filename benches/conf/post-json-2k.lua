-- wrk script: a 2 KB JSON order POST (an order id new on every request);
-- the same requests for every target of benches/crs-load.sh.
local n = 0
local lines = {}
for i = 0, 15 do
    lines[#lines + 1] = string.format(
        '{"sku": "SKU-%05d", "title": "Cotton t-shirt, size M", "quantity": %d, "gift_note": "Happy birthday from all of us"}',
        i, i % 4 + 1)
end
local items = table.concat(lines, ", ")
wrk.method = "POST"
wrk.headers["Host"] = "api.example.com"
wrk.headers["User-Agent"] = "ExampleShop/5.12.0 (com.example.shop; iOS 17.4.1) Alamofire/5.9.0"
wrk.headers["Accept"] = "application/json"
wrk.headers["Content-Type"] = "application/json"
request = function()
    n = n + 1
    local body = string.format(
        '{"order": "ord-%08d", "customer": {"id": "cus_295fdab8", "email": "lea.martin@example.org"}, "lines": [%s], "currency": "EUR"}',
        n, items)
    return wrk.format(nil, "/", nil, body)
end
