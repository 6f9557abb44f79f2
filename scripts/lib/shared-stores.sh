# Sourced by the cluster benchmarks: starts a private ClickHouse and
# PostgreSQL (Debian's packages, as ./scripts/test installs them) on free
# ports in a temporary dir, stops them and removes the dir on exit, and
# exports TALLY_STORAGE and TALLY_COORDINATION for the nodes. Gives
# ch_query SQL, cpu_of PREFIX (CPU seconds of processes so named) and
# free_port.
work=$(mktemp -d /tmp/tally-bench-cluster.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ch_http=$(free_port); ch_tcp=$(free_port); pg_port=$(free_port)

mkdir -p "$work/ch"/{data,tmp,user_files,format_schemas}
cat > "$work/ch/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$work/ch/server.log</log><errorlog>$work/ch/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$ch_http</http_port><tcp_port>$ch_tcp</tcp_port><timezone>UTC</timezone>
  <path>$work/ch/data/</path><tmp_path>$work/ch/tmp/</tmp_path>
  <user_files_path>$work/ch/user_files/</user_files_path><format_schema_path>$work/ch/format_schemas/</format_schema_path>
  <users_config>$work/ch/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size><keep_alive_timeout>3</keep_alive_timeout>
</yandex>
XML
cat > "$work/ch/users.xml" <<XML
<?xml version="1.0"?>
<yandex><profiles><default>${CH_LOG_QUERIES:+<log_queries>1</log_queries>}</default></profiles>
<users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
<quotas><default/></quotas></yandex>
XML
/usr/sbin/clickhouse-server --config-file="$work/ch/config.xml" > /dev/null 2>&1 &
ch_pid=$!

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); chown postgres "$work"; fi
mkdir -p "$work/pg" && { [ "$(id -u)" != 0 ] || chown postgres "$work/pg"; }
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -A trust -U tally > /dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/log" \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=on" -w start > /dev/null
"$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U tally tally

cleanup() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop > /dev/null 2>&1 || true
  kill "$ch_pid" 2>/dev/null || true
  wait "$ch_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ch_http/ping" > /dev/null && break; sleep 0.1; done

ch_query() { curl -sf "http://127.0.0.1:$ch_http/" --data-binary "$1"; }
export TALLY_STORAGE="clickhouse://127.0.0.1:$ch_http/tally"
# BENCH_NO_SHIP=1: a ClickHouse that never answers, to measure the claims
# alone (the outbox fills; nothing is shipped).
if [ -n "${BENCH_NO_SHIP:-}" ]; then export TALLY_STORAGE="clickhouse://127.0.0.1:1/tally"; fi
export TALLY_COORDINATION="postgres://tally@127.0.0.1:$pg_port/tally"
# CPU seconds (user + system) of every process whose name starts with $1.
cpu_of() {
  local prefix=$1 total=0 ticks; ticks=$(getconf CLK_TCK)
  for stat in /proc/[0-9]*/stat; do
    read -r line < "$stat" 2>/dev/null || continue
    local comm=${line#*(}; comm=${comm%%)*}
    case "$comm" in "$prefix"*) ;; *) continue ;; esac
    local rest=${line##*) }; set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "scale=1; $total / $ticks" | bc
}
