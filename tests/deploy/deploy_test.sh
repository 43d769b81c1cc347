#!/usr/bin/env bash
# Tests of deploy/: the install script, the systemd units, the example
# configurations and the k3s manifest, each against the real thing (the real
# canopy-hub and canopy-spoke binaries, a real nats-server, systemd-analyze,
# the real kubectl against canopy-test-apiserver). Registered in CTest by
# tests/deploy/CMakeLists.txt, one test a case:
#
#   deploy_test.sh install   install.sh into a scratch root: tree, modes,
#                            idempotence, edited configs kept, bad arguments
#   deploy_test.sh system    install.sh to / inside a private mount
#                            namespace: the canopy user, owners, modes
#   deploy_test.sh systemd   systemd-analyze verify and security on the
#                            installed units
#   deploy_test.sh configs   each example config loaded by its real daemon:
#                            the example hub and spoke in session across
#                            the example NATS configs' leaf link
#   deploy_test.sh k8s       the k3s manifest applied with kubectl
#
# Needs CANOPY_HUB_BIN, CANOPY_SPOKE_BIN and, for k8s (and the kube lines of
# spoke.yaml in configs),
# CANOPY_TEST_APISERVER_BIN in the environment.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
deploy="${repo}/deploy"

work="$(mktemp -d "${TMPDIR:-/tmp}/canopy-deploy-test.XXXXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "${pid}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "${pid}" 2>/dev/null || true
  done
  rm -rf "${work}"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
pass() { echo "ok: $*"; }

need_env() {
  local v
  for v in "$@"; do
    [[ -n "${!v:-}" && -x "${!v}" ]] || fail "${v} must name an executable (got \"${!v:-}\")"
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start LOG CMD...: runs CMD in the background, output to LOG; sets $last_pid.
start() {
  local log="$1"
  shift
  "$@" >"${log}" 2>&1 &
  last_pid=$!
  pids+=("${last_pid}")
}

# forget PID: a process that has ended, no longer for cleanup to signal.
forget() {
  local kept=() pid
  for pid in "${pids[@]}"; do
    [[ "${pid}" == "$1" ]] || kept+=("${pid}")
  done
  pids=("${kept[@]}")
}

# stop PID: SIGTERM, then the exit code of PID in $stop_code.
stop() {
  kill -TERM "$1"
  stop_code=0
  wait "$1" || stop_code=$?
  forget "$1"
}

# wait_http URL LOG PID: until URL answers 200 (20 s: sanitizer builds start
# slowly), printing LOG on failure, and failing at once when PID has exited.
wait_http() {
  local i code
  for ((i = 0; i < 200; ++i)); do
    if curl -fsS -o "${work}/http.out" "$1" 2>/dev/null; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then
      code=0
      wait "$3" || code=$?
      forget "$3"
      cat "$2" >&2 || true
      fail "the process serving $1 exited ${code}"
    fi
    sleep 0.1
  done
  cat "$2" >&2 || true
  fail "$1 did not answer"
}

# The binaries as install.sh finds them: a bin dir holding both.
bin_dir() {
  mkdir -p "${work}/bin"
  ln -sf "${CANOPY_HUB_BIN}" "${work}/bin/canopy-hub"
  ln -sf "${CANOPY_SPOKE_BIN}" "${work}/bin/canopy-spoke"
  echo "${work}/bin"
}

# mode_of PATH: octal permission bits.
mode_of() { stat -c %a "$1"; }

expect_mode() {
  [[ -e "$1" ]] || fail "$1 is missing"
  local m
  m="$(mode_of "$1")"
  [[ "${m}" == "$2" ]] || fail "$1 has mode ${m}, want $2"
}

# A listing of a tree, with modes, sizes and modification times, to compare.
tree_state() { (cd "$1" && find . -printf '%p %m %s %T@\n' | sort); }

test_install() {
  need_env CANOPY_HUB_BIN CANOPY_SPOKE_BIN
  local root="${work}/root" bins out
  bins="$(bin_dir)"
  mkdir -p "${root}"

  local user_before
  user_before="$(getent passwd canopy || true)"
  out="$("${deploy}/install.sh" --root "${root}" --bin-dir "${bins}")" || fail "install.sh failed: ${out}"
  grep -q "not creating the canopy user" <<<"${out}" || fail "no word about the skipped user: ${out}"
  [[ "$(getent passwd canopy || true)" == "${user_before}" ]] || fail "a scratch-root install touched the canopy user"
  [[ -z "$(find "${root}" ! -user "$(id -u)")" ]] || fail "a scratch-root install chowned: $(find "${root}" ! -user "$(id -u)")"

  expect_mode "${root}/usr/local/bin/canopy-hub" 755
  expect_mode "${root}/usr/local/bin/canopy-spoke" 755
  cmp -s "${CANOPY_HUB_BIN}" "${root}/usr/local/bin/canopy-hub" || fail "canopy-hub is not the built binary"
  cmp -s "${CANOPY_SPOKE_BIN}" "${root}/usr/local/bin/canopy-spoke" || fail "canopy-spoke is not the built binary"
  local unit
  for unit in canopy-hub canopy-spoke canopy-site-nats canopy-nats-reload; do
    expect_mode "${root}/usr/local/lib/systemd/system/${unit}.service" 644
  done
  expect_mode "${root}/usr/local/lib/systemd/system/canopy-nats-auth.path" 644
  expect_mode "${root}/etc/canopy" 750
  expect_mode "${root}/etc/canopy/secrets" 700
  local f
  for f in hub.yaml spoke.yaml nats-leaf.conf; do
    expect_mode "${root}/etc/canopy/${f}" 640
    cmp -s "${deploy}/${f}" "${root}/etc/canopy/${f}" || fail "/etc/canopy/${f} differs from deploy/${f}"
  done
  for f in hub.yaml spoke.yaml nats-leaf.conf nats-hub.conf; do
    expect_mode "${root}/usr/local/share/canopy/examples/${f}" 644
  done
  expect_mode "${root}/usr/local/share/canopy/k8s/canopy-spoke.yaml" 644
  expect_mode "${root}/usr/local/share/canopy/README.md" 644
  # Nothing else: every installed file is one of the above.
  local count
  count="$(find "${root}" -type f | wc -l)"
  [[ "${count}" -eq 16 ]] || fail "expected 16 files under the root, found ${count}: $(find "${root}" -type f)"
  pass "install.sh put the tree in place with its modes"

  # Idempotent: a second run changes nothing.
  local before after
  before="$(tree_state "${root}")"
  sleep 0.01
  out="$("${deploy}/install.sh" --root "${root}" --bin-dir "${bins}")" || fail "second install.sh failed: ${out}"
  after="$(tree_state "${root}")"
  [[ "${before}" == "${after}" ]] || fail "a second run changed the tree: $(diff <(echo "${before}") <(echo "${after}"))"
  grep -q "nothing to do" <<<"${out}" || fail "the second run did not say it had nothing to do: ${out}"
  pass "a second run changes nothing"

  # An edited configuration is kept; a changed mode or unit is put right.
  echo "log_level: debug  # edited" >>"${root}/etc/canopy/spoke.yaml"
  cp "${root}/etc/canopy/spoke.yaml" "${work}/edited.yaml"
  chmod 700 "${root}/usr/local/bin/canopy-spoke"
  echo "# stale" >>"${root}/usr/local/lib/systemd/system/canopy-hub.service"
  rm -r "${root}/etc/canopy/secrets"
  out="$(DESTDIR="${root}" "${deploy}/install.sh" --bin-dir "${bins}")" || fail "install.sh with DESTDIR failed: ${out}"
  cmp -s "${work}/edited.yaml" "${root}/etc/canopy/spoke.yaml" || fail "an edited spoke.yaml was replaced"
  grep -q "kept ${root}/etc/canopy/spoke.yaml" <<<"${out}" || fail "no word about the kept config: ${out}"
  expect_mode "${root}/usr/local/bin/canopy-spoke" 755
  cmp -s "${deploy}/systemd/canopy-hub.service" "${root}/usr/local/lib/systemd/system/canopy-hub.service" ||
    fail "a stale unit was not replaced"
  expect_mode "${root}/etc/canopy/secrets" 700
  pass "a rerun keeps edited configs and repairs the rest (DESTDIR)"

  # Bad input: clear errors, exit 2, nothing written.
  local code=0
  out="$("${deploy}/install.sh" --root "${work}/nonexistent" --bin-dir "${bins}" 2>&1)" || code=$?
  [[ ${code} -eq 2 && "${out}" == *"is not a directory"* ]] || fail "missing root: code ${code}: ${out}"
  code=0
  mkdir -p "${work}/empty" "${work}/root2"
  out="$("${deploy}/install.sh" --root "${work}/root2" --bin-dir "${work}/empty" 2>&1)" || code=$?
  [[ ${code} -eq 2 && "${out}" == *"canopy-hub: not an executable file"* ]] || fail "missing binaries: code ${code}: ${out}"
  [[ -z "$(ls -A "${work}/root2")" ]] || fail "a failed install wrote files"
  code=0
  out="$("${deploy}/install.sh" --rot "${work}/root2" 2>&1)" || code=$?
  [[ ${code} -eq 2 && "${out}" == *'unknown argument "--rot"'* ]] || fail "bad flag: code ${code}: ${out}"
  pass "bad arguments are refused with a clear error"
}

# install.sh to "/" (the real-system path: the canopy user, chown), in a
# private mount namespace (unshare -m) where /etc is a copy of this machine's
# and /usr/local, /var/lib and /var/log are empty tmpfs: what it writes there
# vanishes with the namespace and nothing outside changes. Needs root and
# CAP_SYS_ADMIN; without them it is skipped (exit 77).
test_system() {
  need_env CANOPY_HUB_BIN CANOPY_SPOKE_BIN
  if [[ "$(id -u)" -ne 0 ]] || ! unshare -m --propagation private true 2>/dev/null; then
    echo "skipped: needs root and unshare -m (a private mount namespace)"
    exit 77
  fi
  local bins
  bins="$(bin_dir)"
  cp -a /etc "${work}/etc"
  # The binaries must stay reachable where they are (a build tree, maybe
  # under /usr/local or /var/lib): copied first.
  cp "${CANOPY_HUB_BIN}" "${work}/bin/canopy-hub.real"
  cp "${CANOPY_SPOKE_BIN}" "${work}/bin/canopy-spoke.real"
  mv "${work}/bin/canopy-hub.real" "${work}/bin/canopy-hub"
  mv "${work}/bin/canopy-spoke.real" "${work}/bin/canopy-spoke"
  unshare -m --propagation private env INNER_BINS="${bins}" INNER_ETC="${work}/etc" \
    bash "${BASH_SOURCE[0]}" system-inner
}

test_system_inner() {
  local bins="${INNER_BINS:?}"
  mount --bind "${INNER_ETC:?}" /etc
  mount -t tmpfs canopy-test /usr/local
  mount -t tmpfs canopy-test /var/lib
  mount -t tmpfs canopy-test /var/log
  getent passwd canopy >/dev/null && fail "this machine has a canopy user; the test needs one without"
  # A site's own /usr/local/bin (Debian's old setgid-staff layout) is kept.
  install -d -m 2775 /usr/local/bin

  local out
  out="$("${deploy}/install.sh" --bin-dir "${bins}" 2>&1)" || fail "install.sh to /: ${out}"
  grep -q "created system user canopy" <<<"${out}" || fail "no word about the new user: ${out}"
  local entry uid shell
  entry="$(getent passwd canopy)" || fail "no canopy user after install.sh"
  uid="$(cut -d: -f3 <<<"${entry}")"
  shell="$(cut -d: -f7 <<<"${entry}")"
  ((uid < 1000)) || fail "canopy is not a system user: ${entry}"
  [[ "${shell}" == /usr/sbin/nologin ]] || fail "canopy has a login shell: ${entry}"
  getent group canopy >/dev/null || fail "no canopy group"

  owner() { stat -c '%U:%G %a' "$1"; }
  [[ "$(owner /etc/canopy)" == "root:canopy 750" ]] || fail "/etc/canopy: $(owner /etc/canopy)"
  [[ "$(owner /etc/canopy/secrets)" == "canopy:canopy 700" ]] || fail "/etc/canopy/secrets: $(owner /etc/canopy/secrets)"
  local f
  for f in hub.yaml spoke.yaml nats-leaf.conf; do
    [[ "$(owner "/etc/canopy/${f}")" == "root:canopy 640" ]] || fail "/etc/canopy/${f}: $(owner "/etc/canopy/${f}")"
  done
  [[ "$(owner /usr/local/bin/canopy-spoke)" == "root:root 755" ]] || fail "canopy-spoke: $(owner /usr/local/bin/canopy-spoke)"
  [[ "$(stat -c %a /usr/local/bin)" == 2775 ]] || fail "install.sh changed /usr/local/bin's mode: $(owner /usr/local/bin)"
  # The canopy user reads its configs and not the secrets of others.
  su -s /bin/sh canopy -c "cat /etc/canopy/spoke.yaml >/dev/null" || fail "canopy cannot read spoke.yaml"
  pass "install.sh to / creates the canopy system user and sets owners and modes"

  out="$("${deploy}/install.sh" --bin-dir "${bins}" 2>&1)" || fail "second install.sh to /: ${out}"
  grep -q "user canopy exists" <<<"${out}" || fail "the second run did not find the user: ${out}"
  grep -q "nothing to do" <<<"${out}" || fail "the second run changed something: ${out}"
  [[ "$(grep -c '^canopy:' /etc/passwd)" -eq 1 ]] || fail "canopy is in /etc/passwd more than once"
  pass "a second run to / changes nothing"
}

# systemd-analyze verify, in a container without a running systemd (no
# /run/systemd/system, PID 1 is not systemd): `--root DIR` makes it load units
# from DIR's unit directories, with no manager or D-Bus, and check that each
# Exec*= command exists and is executable under DIR. So the scratch root must
# hold what the units name that install.sh does not install: Debian's
# nats-server and /bin/kill (copied from this machine, real binaries), and the
# units the canopy units refer to (multi-user.target, network-online.target
# and what they pull in: systemd's own unit directory, copied). verify prints
# unknown keys and bad values as warnings and still exits 0, so any output at
# all is a failure here.
test_systemd() {
  need_env CANOPY_HUB_BIN CANOPY_SPOKE_BIN
  command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (scripts/install-deps installs systemd)"
  local root="${work}/root" bins
  bins="$(bin_dir)"
  mkdir -p "${root}"
  "${deploy}/install.sh" --root "${root}" --bin-dir "${bins}" >/dev/null
  local units_dir
  units_dir="$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)"
  [[ -f "${units_dir}/multi-user.target" ]] || units_dir=/usr/lib/systemd/system
  mkdir -p "${root}/usr/lib/systemd" "${root}/usr/bin" "${root}/usr/sbin"
  ln -s usr/bin "${root}/bin"  # merged /usr, as on Debian 12
  ln -s usr/lib "${root}/lib"
  cp -r "${units_dir}" "${root}/usr/lib/systemd/system"
  cp "$(command -v nats-server)" "${root}/usr/sbin/nats-server"
  cp /bin/kill "${root}/usr/bin/kill"
  cp "$(command -v systemctl)" "${root}/usr/bin/systemctl"

  local unit out code
  for unit in canopy-hub.service canopy-spoke.service canopy-site-nats.service \
    canopy-nats-auth.path canopy-nats-reload.service; do
    code=0
    out="$(systemd-analyze --root="${root}" verify "${unit}" 2>&1)" || code=$?
    [[ ${code} -eq 0 && -z "${out}" ]] || fail "systemd-analyze verify ${unit}: exit ${code}: ${out}"
    pass "systemd-analyze verify ${unit}"
  done

  # systemd's own reckoning of the sandbox, offline: an exposure of at most
  # 2.0 of 10 (--threshold is in tenths). The check can fail: Debian's
  # nats-server.service (in the copied unit directory) is over it.
  for unit in canopy-hub.service canopy-spoke.service canopy-site-nats.service; do
    code=0
    out="$(systemd-analyze security --offline=true --root="${root}" --threshold=20 "${unit}" 2>&1)" || code=$?
    [[ ${code} -eq 0 ]] || fail "systemd-analyze security ${unit}: $(tail -1 <<<"${out}")"
    pass "$(tail -1 <<<"${out}" | sed 's/^[^O]*//')"
  done
  if [[ -f "${root}/usr/lib/systemd/system/nats-server.service" ]]; then
    if systemd-analyze security --offline=true --root="${root}" --threshold=20 nats-server.service >/dev/null 2>&1; then
      fail "systemd-analyze security passed Debian's nats-server.service"
    fi
  fi

  # What the units promise the daemons, read back from the installed files.
  local want dir="${root}/usr/local/lib/systemd/system"
  for unit in canopy-hub canopy-spoke canopy-site-nats; do
    for want in "User=canopy" "StateDirectory=${unit}" "ProtectSystem=strict" "NoNewPrivileges=yes" \
      "Restart=on-failure" "After=network-online.target" "Wants=network-online.target"; do
      grep -q "^${want}\( \|\$\)" "${dir}/${unit}.service" || fail "${unit}.service lacks ${want}"
    done
  done
  grep -qx "After=.*canopy-site-nats.service.*" "${dir}/canopy-spoke.service" || fail "the spoke is not ordered after the site nats"
  grep -qx "Wants=.*canopy-site-nats.service.*" "${dir}/canopy-spoke.service" || fail "the spoke does not want the site nats"
  grep -qx "LimitNOFILE=1048576" "${dir}/canopy-site-nats.service" || fail "the bus has a low LimitNOFILE"
  grep -qx "ExecStart=/usr/local/bin/canopy-hub --config /etc/canopy/hub.yaml" "${dir}/canopy-hub.service" ||
    fail "canopy-hub.service does not run the installed hub with /etc/canopy/hub.yaml"
  grep -qx "ExecStart=/usr/local/bin/canopy-spoke --config /etc/canopy/spoke.yaml" "${dir}/canopy-spoke.service" ||
    fail "canopy-spoke.service does not run the installed spoke with /etc/canopy/spoke.yaml"
  grep -qx "ExecStart=/usr/sbin/nats-server --config /etc/canopy/nats-leaf.conf" "${dir}/canopy-site-nats.service" ||
    fail "canopy-site-nats.service does not run nats-server with /etc/canopy/nats-leaf.conf"
  pass "units run the installed files as canopy, hardened"

  # The check can fail: a misspelt key, and a missing binary.
  sed -i 's/^NoNewPrivileges=/NoNewPrivilege=/' "${dir}/canopy-hub.service"
  out="$(systemd-analyze --root="${root}" verify canopy-hub.service 2>&1)" || true
  [[ "${out}" == *"Unknown key"*"NoNewPrivilege"* ]] || fail "a misspelt key went unreported: ${out}"
  rm "${root}/usr/local/bin/canopy-spoke"
  code=0
  out="$(systemd-analyze --root="${root}" verify canopy-spoke.service 2>&1)" || code=$?
  [[ ${code} -ne 0 && "${out}" == *"/usr/local/bin/canopy-spoke"* ]] ||
    fail "a missing ExecStart binary went unreported: exit ${code}: ${out}"
  pass "verify reports a misspelt key and a missing binary"
}

# start_nats: a real nats-server on a free port; sets $nats_url.
start_nats() {
  local port
  port="$(free_port)"
  start "${work}/nats.log" nats-server -a 127.0.0.1 -p "${port}"
  nats_url="nats://127.0.0.1:${port}"
  local i
  for ((i = 0; i < 100; ++i)); do
    grep -qs "Server is ready" "${work}/nats.log" && return 0
    sleep 0.05
  done
  cat "${work}/nats.log" >&2
  fail "nats-server did not start"
}

# run_daemon NAME URL_PATH CMD...: starts a daemon, waits until its health
# URL answers, leaves the answer in ${work}/http.out, stops it with SIGTERM
# and checks that it exited 0. The caller picks the health port ($port).
run_daemon() {
  local name="$1" url="$2"
  shift 2
  start "${work}/${name}.log" "$@"
  local pid="${last_pid}"
  wait_http "${url}" "${work}/${name}.log" "${pid}"
  cp "${work}/http.out" "${work}/${name}.healthz"
  stop "${pid}"
  [[ ${stop_code} -eq 0 ]] || {
    cat "${work}/${name}.log" >&2
    fail "${name} exited ${stop_code} on SIGTERM"
  }
}

# example_conf SRC DEST FROM TO...: SRC with each FROM replaced by TO, every
# FROM required to be there (so the test notices the example changing).
example_conf() {
  local src="$1" dest="$2"
  shift 2
  cp "${src}" "${dest}"
  while (($# >= 2)); do
    grep -qF -- "$1" "${dest}" || fail "$(basename "${src}") no longer holds \"$1\""
    sed -i "s|$1|$2|" "${dest}"
    shift 2
  done
}

# wait_nats LOG PID: until nats-server's log says it is ready.
wait_nats() {
  local i
  for ((i = 0; i < 100; ++i)); do
    grep -qs "Server is ready" "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  cat "$1" >&2
  fail "nats-server did not start"
}

# start_example_nats: deploy/nats-hub.conf and deploy/nats-leaf.conf, their
# ports made free ones and the leaf's remote the hub's: two real
# nats-servers, linked. Sets $hub_nats_url and $leaf_nats_url.
start_example_nats() {
  local hub_port hub_http leaf_listen leaf_port leaf_http i
  hub_port="$(free_port)"
  hub_http="$(free_port)"
  leaf_listen="$(free_port)"
  leaf_port="$(free_port)"
  leaf_http="$(free_port)"
  example_conf "${deploy}/nats-hub.conf" "${work}/nats-hub.conf" "listen: 127.0.0.1:4222" \
    "listen: 127.0.0.1:${hub_port}" "http: 127.0.0.1:8222" "http: 127.0.0.1:${hub_http}" \
    "listen: 0.0.0.0:7422" "listen: 127.0.0.1:${leaf_listen}"
  example_conf "${deploy}/nats-leaf.conf" "${work}/nats-leaf.conf" "listen: 127.0.0.1:4222" \
    "listen: 127.0.0.1:${leaf_port}" "http: 127.0.0.1:8222" "http: 127.0.0.1:${leaf_http}" \
    "nats-leaf://hub.example.net:7422" "nats-leaf://127.0.0.1:${leaf_listen}"
  start "${work}/nats-hub.log" nats-server --config "${work}/nats-hub.conf"
  wait_nats "${work}/nats-hub.log" "${last_pid}"
  start "${work}/nats-leaf.log" nats-server --config "${work}/nats-leaf.conf"
  wait_nats "${work}/nats-leaf.log" "${last_pid}"
  for ((i = 0; i < 100; ++i)); do
    curl -fsS "http://127.0.0.1:${hub_http}/leafz" 2>/dev/null | grep -q '"leafnodes": 1' && break
    sleep 0.05
  done
  curl -fsS "http://127.0.0.1:${hub_http}/leafz" | grep -q '"leafnodes": 1' || {
    cat "${work}/nats-hub.log" "${work}/nats-leaf.log" >&2
    fail "the example site nats-server did not link to the example hub's"
  }
  hub_nats_url="nats://127.0.0.1:${hub_port}"
  leaf_nats_url="nats://127.0.0.1:${leaf_port}"
}

# The example configs, loaded by the real daemons. Paths and addresses the
# daemons would bind or write (data_dir, listen addresses, the NATS URL, the
# manifests and kubeconfig paths) are overridden with flags, which win over
# the file; every other setting comes from the file, and an unknown or bad
# setting ends the daemon with exit 2 before it starts.
test_configs() {
  need_env CANOPY_HUB_BIN CANOPY_SPOKE_BIN
  start_example_nats
  local port grpc spoke_port

  port="$(free_port)"
  grpc="$(free_port)"
  start "${work}/hub.log" "${CANOPY_HUB_BIN}" --config "${deploy}/hub.yaml" --data "${work}/hub" \
    --nats "${hub_nats_url}" --grpc "127.0.0.1:${grpc}" --health "127.0.0.1:${port}"
  local hub_pid="${last_pid}"
  wait_http "http://127.0.0.1:${port}/healthz" "${work}/hub.log" "${hub_pid}"
  grep -q '"name":"hub"' "${work}/http.out" || fail "hub /healthz: $(cat "${work}/http.out")"
  pass "deploy/hub.yaml runs canopy-hub"

  # The example spoke, on the example site NATS, finds the example hub (the
  # site's parent: is the hub's name:) across the leaf link.
  mkdir -p "${work}/manifests"
  spoke_port="$(free_port)"
  start "${work}/spoke.log" "${CANOPY_SPOKE_BIN}" --config "${deploy}/spoke.yaml" --data "${work}/spoke" \
    --manifests "${work}/manifests" --nats "${leaf_nats_url}" --health "127.0.0.1:${spoke_port}"
  local spoke_pid="${last_pid}" i
  wait_http "http://127.0.0.1:${spoke_port}/healthz" "${work}/spoke.log" "${spoke_pid}"
  grep -q '"site":"shop-berlin"' "${work}/http.out" || fail "spoke /healthz: $(cat "${work}/http.out")"
  for ((i = 0; i < 300; ++i)); do
    curl -fsS -o "${work}/http.out" "http://127.0.0.1:${spoke_port}/healthz" 2>/dev/null &&
      grep -q '"session_open":true' "${work}/http.out" && break
    sleep 0.1
  done
  grep -q '"session_open":true' "${work}/http.out" || {
    tail -n 20 "${work}/spoke.log" "${work}/hub.log" >&2 || true
    fail "the example spoke opened no session with the example hub: $(cat "${work}/http.out")"
  }
  curl -fsS "http://127.0.0.1:${port}/v1/sessions" | grep -q '"shop-berlin"' ||
    fail "the hub lists no session of shop-berlin"
  stop "${spoke_pid}"
  [[ ${stop_code} -eq 0 ]] || fail "canopy-spoke exited ${stop_code} on SIGTERM"
  stop "${hub_pid}"
  [[ ${stop_code} -eq 0 ]] || fail "canopy-hub exited ${stop_code} on SIGTERM"
  pass "deploy/spoke.yaml runs canopy-spoke, in session with the hub over the leaf link"
  nats_url="${leaf_nats_url}"

  # spoke.yaml's commented kube lines, uncommented, against the test API
  # server (its kubeconfig and context override the example's paths).
  if [[ -n "${CANOPY_TEST_APISERVER_BIN:-}" ]]; then
    start_apiserver
    sed -e '/^applier: manifests-dir/d' -e '/^manifests_dir:/d' \
      -e 's/^# \(applier: kube\)/\1/' -e 's/^# \(kube\(config\|_context\|_audit_seconds\):\)/\1/' "${deploy}/spoke.yaml" >"${work}/spoke-kube.yaml"
    [[ "$(grep -c '^kube\|^applier: kube' "${work}/spoke-kube.yaml")" -eq 4 ]] ||
      fail "spoke.yaml's kube lines changed: $(cat "${work}/spoke-kube.yaml")"
    port="$(free_port)"
    run_daemon spoke-kube "http://127.0.0.1:${port}/healthz" "${CANOPY_SPOKE_BIN}" --config "${work}/spoke-kube.yaml" \
      --data "${work}/spoke-kube" --kubeconfig "${kubeconfig}" --context canopy-test --nats "${nats_url}" \
      --health "127.0.0.1:${port}"
    pass "deploy/spoke.yaml's applier kube lines run canopy-spoke"
  fi

  # The check can fail: a misspelt setting is refused with exit 2.
  sed 's/^site:/sight:/' "${deploy}/spoke.yaml" >"${work}/typo.yaml"
  local code=0 out
  out="$("${CANOPY_SPOKE_BIN}" --config "${work}/typo.yaml" 2>&1)" || code=$?
  [[ ${code} -eq 2 && "${out}" == *'unknown setting "sight"'* ]] || fail "a misspelt setting: exit ${code}: ${out}"
  pass "a misspelt setting is refused"

  local f
  for f in nats-leaf.conf nats-hub.conf; do
    out="$(nats-server -t --config "${deploy}/${f}" 2>&1)" || fail "nats-server refuses deploy/${f}: ${out}"
  done
  printf 'listen: 127.0.0.1:4222\nleafnode {}\n' >"${work}/bad-nats.conf"
  if nats-server -t --config "${work}/bad-nats.conf" >/dev/null 2>&1; then
    fail "nats-server -t accepted an unknown field"
  fi
  pass "nats-server accepts deploy/nats-leaf.conf and nats-hub.conf"
}

# start_apiserver: canopy-test-apiserver on a free port; sets $kubeconfig.
start_apiserver() {
  local dir="${work}/cluster"
  mkdir -p "${dir}"
  start "${work}/apiserver.log" "${CANOPY_TEST_APISERVER_BIN}" --dir "${dir}" --port "$(free_port)" \
    --crd-establish-ms 50
  local i
  for ((i = 0; i < 100; ++i)); do
    if grep -qs "^serving https://" "${work}/apiserver.log"; then
      kubeconfig="${dir}/kubeconfig-token"
      return 0
    fi
    sleep 0.05
  done
  cat "${work}/apiserver.log" >&2
  fail "canopy-test-apiserver did not start"
}

# Its own discovery cache: a port of an earlier run may come back with other kinds.
kubectl_() { kubectl --kubeconfig "${kubeconfig}" --cache-dir "${work}/kube-cache" --request-timeout 10s "$@"; }

# The k3s manifest, applied with the real kubectl by server-side apply (what
# the README tells an operator to run) to the test API server.
#
# The test API server serves the core, apps and batch kinds and CRDs, but no
# RBAC and no NetworkPolicy: for those, CRDs of the same group, kind and scope
# stand in, so the objects are accepted as far as names, scope and namespaces
# go (not RBAC's semantics). PersistentVolumeClaim, a core kind, cannot be a
# CRD: the claim is checked by the Deployment's reference to it only.
test_k8s() {
  need_env CANOPY_SPOKE_BIN CANOPY_TEST_APISERVER_BIN
  start_apiserver
  local manifest="${deploy}/k8s/canopy-spoke.yaml"

  cat >"${work}/stand-ins.yaml" <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: clusterroles.rbac.authorization.k8s.io}
spec:
  group: rbac.authorization.k8s.io
  scope: Cluster
  names: {plural: clusterroles, singular: clusterrole, kind: ClusterRole}
  versions:
  - {name: v1, served: true, storage: true,
     schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: clusterrolebindings.rbac.authorization.k8s.io}
spec:
  group: rbac.authorization.k8s.io
  scope: Cluster
  names: {plural: clusterrolebindings, singular: clusterrolebinding, kind: ClusterRoleBinding}
  versions:
  - {name: v1, served: true, storage: true,
     schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: networkpolicies.networking.k8s.io}
spec:
  group: networking.k8s.io
  scope: Namespaced
  names: {plural: networkpolicies, singular: networkpolicy, kind: NetworkPolicy}
  versions:
  - {name: v1, served: true, storage: true,
     schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
EOF
  local out
  out="$(kubectl_ apply --server-side -f "${work}/stand-ins.yaml" 2>&1)" || fail "stand-in CRDs: ${out}"
  out="$(kubectl_ wait --for=condition=Established --timeout=20s crd --all 2>&1)" || fail "stand-in CRDs: ${out}"

  # The manifest's documents, without the claim (see above).
  awk 'BEGIN { RS = "\n---\n"; ORS = "\n---\n" } !/(^|\n)kind: PersistentVolumeClaim(\n|$)/' "${manifest}" \
    >"${work}/manifest.yaml"
  local kinds
  kinds="$(grep '^kind:' "${manifest}" | sed 's/^kind: //' | tr '\n' ' ')"
  [[ "${kinds}" == "Namespace ServiceAccount ClusterRole ClusterRoleBinding ConfigMap PersistentVolumeClaim Deployment NetworkPolicy " ]] ||
    fail "the manifest's kinds changed (update this test): ${kinds}"
  [[ "$(grep -c '^kind:' "${work}/manifest.yaml")" -eq 7 ]] || fail "splitting the manifest: $(cat "${work}/manifest.yaml")"

  out="$(kubectl_ apply --server-side -f "${work}/manifest.yaml" 2>&1)" || fail "kubectl apply --server-side: ${out}"
  local want
  for want in "namespace/canopy serverside-applied" "serviceaccount/canopy-spoke serverside-applied" \
    "clusterrole.rbac.authorization.k8s.io/canopy-spoke serverside-applied" \
    "clusterrolebinding.rbac.authorization.k8s.io/canopy-spoke serverside-applied" \
    "configmap/canopy-spoke serverside-applied" "deployment.apps/canopy-spoke serverside-applied" \
    "networkpolicy.networking.k8s.io/canopy-spoke serverside-applied"; do
    grep -qxF "${want}" <<<"${out}" || fail "kubectl did not report \"${want}\": ${out}"
  done
  out="$(kubectl_ get -f "${work}/manifest.yaml" -o name 2>&1)" || fail "kubectl get: ${out}"
  [[ "$(wc -l <<<"${out}")" -eq 7 ]] || fail "not every object is there: ${out}"
  # Applying again is a no-op, as for an operator re-running the command.
  out="$(kubectl_ apply --server-side -f "${work}/manifest.yaml" 2>&1)" || fail "second apply: ${out}"
  pass "kubectl apply --server-side accepts every object"

  # The objects fit together, as the API server holds them.
  get() { kubectl_ get "$@"; }
  [[ "$(get -n canopy deploy canopy-spoke -o jsonpath='{.spec.replicas} {.spec.strategy.type}')" == "1 Recreate" ]] ||
    fail "the Deployment is not 1 replica, Recreate"
  [[ "$(get -n canopy deploy canopy-spoke -o jsonpath='{.spec.template.spec.serviceAccountName}')" == canopy-spoke ]] ||
    fail "the Deployment does not run as the ServiceAccount"
  [[ "$(get clusterrolebinding canopy-spoke -o jsonpath='{.subjects[0].kind}/{.subjects[0].namespace}/{.subjects[0].name} {.roleRef.name}')" == "ServiceAccount/canopy/canopy-spoke canopy-spoke" ]] ||
    fail "the ClusterRoleBinding does not bind the ServiceAccount to the ClusterRole"
  local verbs
  verbs="$(get clusterrole canopy-spoke -o jsonpath='{.rules[0].verbs}')"
  for want in get list watch create patch delete; do
    [[ "${verbs}" == *"\"${want}\""* ]] || fail "the ClusterRole lacks ${want}: ${verbs}"
  done
  local spoke_json probes
  spoke_json='{.spec.template.spec.containers[?(@.name=="spoke")]'
  probes="$(get -n canopy deploy canopy-spoke -o jsonpath="${spoke_json}.livenessProbe.httpGet.path} ${spoke_json}.readinessProbe.httpGet.path} ${spoke_json}.startupProbe.httpGet.path} ${spoke_json}.ports[0].containerPort}")"
  [[ "${probes}" == "/livez /readyz /livez 7501" ]] || fail "the spoke's probes: ${probes}"
  local claim
  claim="$(get -n canopy deploy canopy-spoke -o jsonpath='{.spec.template.spec.volumes[?(@.name=="store")].persistentVolumeClaim.claimName}')"
  awk 'BEGIN { RS = "\n---\n" } /(^|\n)kind: PersistentVolumeClaim(\n|$)/' "${manifest}" >"${work}/claim.yaml"
  if [[ -z "${claim}" ]] || ! grep -q "^  name: ${claim}\$" "${work}/claim.yaml"; then
    fail "the store's claim \"${claim}\" is not the manifest's PersistentVolumeClaim"
  fi
  grep -q "^  namespace: canopy\$" "${work}/claim.yaml" || fail "the claim is not in the Deployment's namespace"
  [[ "$(get -n canopy deploy canopy-spoke -o jsonpath='{.spec.template.spec.volumes[?(@.name=="credentials")].secret.secretName}')" == canopy-spoke-credentials ]] ||
    fail "no credentials Secret reference"
  # 0440 read as octal (288), as kubectl's YAML reads a leading zero.
  [[ "$(get -n canopy deploy canopy-spoke -o jsonpath='{.spec.template.spec.volumes[?(@.name=="credentials")].secret.defaultMode}')" == 288 ]] ||
    fail "the credentials' defaultMode is not 0440"
  [[ "$(get -n canopy networkpolicy canopy-spoke -o jsonpath='{.spec.podSelector.matchLabels}')" == \
    "$(get -n canopy deploy canopy-spoke -o jsonpath='{.spec.selector.matchLabels}')" ]] ||
    fail "the NetworkPolicy does not select the spoke's pods"
  pass "Deployment, ServiceAccount, RBAC, store and probes fit together"

  # The ConfigMap's configs, as the API server returns them, loaded by the real
  # spoke and nats-server. In the pod the spoke finds the cluster through its
  # service account (KUBERNETES_SERVICE_HOST and /var/run/secrets/...); here
  # --kubeconfig points it at the test API server instead.
  get -n canopy configmap canopy-spoke -o jsonpath='{.data.spoke\.yaml}' >"${work}/cm-spoke.yaml"
  get -n canopy configmap canopy-spoke -o jsonpath='{.data.nats-leaf\.conf}' >"${work}/cm-nats.conf"
  grep -q "^applier: kube" "${work}/cm-spoke.yaml" || fail "the ConfigMap's spoke is not applier kube"
  if grep -q "^kubeconfig:" "${work}/cm-spoke.yaml"; then fail "the ConfigMap's spoke names a kubeconfig"; fi
  grep -q "^health_listen: 0.0.0.0:7501" "${work}/cm-spoke.yaml" || fail "the local API is not on the probes' port"
  out="$(nats-server -t --config "${work}/cm-nats.conf" 2>&1)" || fail "nats-server refuses the ConfigMap's nats-leaf.conf: ${out}"
  start_nats
  local port
  port="$(free_port)"
  run_daemon cm-spoke "http://127.0.0.1:${port}/healthz" "${CANOPY_SPOKE_BIN}" --config "${work}/cm-spoke.yaml" \
    --data "${work}/cm-spoke" --kubeconfig "${kubeconfig}" --nats "${nats_url}" --health "127.0.0.1:${port}"
  grep -q '"site":"shop-berlin"' "${work}/cm-spoke.healthz" || fail "spoke /healthz: $(cat "${work}/cm-spoke.healthz")"
  pass "the ConfigMap's spoke.yaml and nats-leaf.conf load in the real daemons"
}

case "${1:-}" in
  install) test_install ;;
  system) test_system ;;
  system-inner) test_system_inner ;;
  systemd) test_systemd ;;
  configs) test_configs ;;
  k8s) test_k8s ;;
  *)
    echo "usage: $0 install|system|systemd|configs|k8s" >&2
    exit 2
    ;;
esac
