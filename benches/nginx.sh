# Sourced by the whole-process bench scripts: nginx on loopback serving a directory, as a plain
# HTTP server (Range, sendfile) would serve packages to devices.
#
#   . "$ROOT/benches/nginx.sh"
#   nginx_serve "$WORK" "$PORT" [body]   # serves $WORK/www; sets NGINX_PID; kill it when done
#
# With `body`, every request is logged to $WORK/nginx/access.log as "URI BODY_BYTES_SENT" (what
# a download cost on the wire). Needs nginx (Debian: nginx-light) on PATH or in /usr/sbin.

nginx_serve() {
    local work="$1" port="$2" log="${3:-}" bin access="access_log off;"
    bin="$(command -v nginx || echo /usr/sbin/nginx)"
    [ -x "$bin" ] || { echo "needs nginx (apt-get install nginx-light)" >&2; return 1; }
    mkdir -p "$work/www" "$work/nginx"
    # nginx's workers drop to an unprivileged user: let them reach the files served.
    chmod 755 "$work" "$work/www"
    if [ "$log" = body ]; then
        access="log_format body '\$request_uri \$body_bytes_sent'; access_log $work/nginx/access.log body;"
    fi
    cat >"$work/nginx/nginx.conf" <<CONF
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events {}
http {
    $access
    sendfile on;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server { listen 127.0.0.1:$port; root $work/www; }
}
CONF
    "$bin" -c "$work/nginx/nginx.conf" -p "$work/nginx" &
    NGINX_PID=$!
    echo ok >"$work/www/.ready"
    chmod 644 "$work/www/.ready"
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/.ready" && return 0
        sleep 0.1
    done
    echo "nginx did not answer on 127.0.0.1:$port (see $work/nginx/error.log)" >&2
    return 1
}
