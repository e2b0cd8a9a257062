-- wrk script: an API GET with five query parameters (the page number new
-- on every request) and a few ordinary headers; the same requests for every
-- target of benches/crs-load.sh.
local n = 0
wrk.headers["Host"] = "api.example.com"
wrk.headers["User-Agent"] = "ExampleShop/5.12.0 (com.example.shop; iOS 17.4.1) Alamofire/5.9.0"
wrk.headers["Accept"] = "application/json"
wrk.headers["Accept-Language"] = "en-US,en;q=0.9"
request = function()
    n = n + 1
    return wrk.format("GET", string.format(
        "/?page=%d&per_page=50&sort=-created_at&category=shoes&q=blue+running+shoes", n))
end
