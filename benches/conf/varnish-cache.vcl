vcl 4.1;
# Varnish's hit path for benches/cache-load.sh: the built-in VCL caches the
# rig's origin responses (GET, no cookies); every object is kept 10 minutes.
backend origin {
    .host = "@UPSTREAM_HOST@";
    .port = "@UPSTREAM_PORT@";
}
sub vcl_backend_response {
    set beresp.ttl = 10m;
}
