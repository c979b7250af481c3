#!/bin/sh
# Starts nginx as the edge (EDGE_MODE=edge: the same template dev/up and the
# tests render) or as the page's static server (EDGE_MODE=static).
set -eu
DIR=${EDGE_STATE_DIR:-/var/lib/allies-edge}
WEB=${EDGE_WEB:-/usr/share/allies/web}
TEMPLATE=${EDGE_TEMPLATE:-/etc/allies/edge/nginx.conf.template}
mkdir -p "$DIR/tmp/body" "$DIR/tmp/proxy" "$DIR/tmp/fastcgi" "$DIR/tmp/uwsgi" "$DIR/tmp/scgi"
case "${EDGE_MODE:-static}" in
  edge)
    if [ -f /etc/allies/edge/tls/tls.crt ]; then
      cp /etc/allies/edge/tls/tls.crt "$DIR/cert.pem"
      cp /etc/allies/edge/tls/tls.key "$DIR/key.pem"
    elif [ ! -f "$DIR/cert.pem" ]; then
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
    fi
    sed -e "s#@DIR@#$DIR#g" -e "s#@HOST@#0.0.0.0#" -e "s#@PORT@#${EDGE_PORT:-8443}#" -e "s#@WEB@#$WEB#" \
      -e "s#@GUARDIAN@#${EDGE_GUARDIAN:-guardian:50051}#" -e "s#@TIMESQUARE@#${EDGE_TIMESQUARE:-timesquare:50052}#" \
      -e "s#@PROJECTOR@#${EDGE_PROJECTOR:-projector:50054}#" -e "s#@COMMAND@#${EDGE_COMMAND:-command:50053}#" \
      -e "s#^error_log .*#error_log stderr warn;#" -e "s#access_log .*#access_log /dev/stdout;#" \
      "$TEMPLATE" >"$DIR/nginx.conf"
    ;;
  static)
    cat >"$DIR/nginx.conf" <<CONF
worker_processes 1;
pid $DIR/nginx.pid;
error_log stderr warn;
daemon off;
events { worker_connections 1024; }
http {
  access_log /dev/stdout;
  client_body_temp_path $DIR/tmp/body;
  proxy_temp_path $DIR/tmp/proxy;
  fastcgi_temp_path $DIR/tmp/fastcgi;
  uwsgi_temp_path $DIR/tmp/uwsgi;
  scgi_temp_path $DIR/tmp/scgi;
  types { text/html html; application/javascript js; text/css css; application/json json; image/png png; }
  server {
    listen 8080;
    location / { root $WEB; try_files \$uri /index.html =404; }
  }
}
CONF
    ;;
  *)
    echo "allies-edge: EDGE_MODE must be edge or static, got '$EDGE_MODE'" >&2
    exit 2
    ;;
esac
nginx -t -q -p "$DIR" -c "$DIR/nginx.conf"
# deploy/validate renders and checks both modes without serving.
[ "${EDGE_CHECK_ONLY:-}" = 1 ] && exit 0
exec nginx -p "$DIR" -c "$DIR/nginx.conf"
