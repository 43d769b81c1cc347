#!/usr/bin/env bash
# Installs Canopy on a Debian machine: the daemons' binaries, their systemd
# units and example configurations (deploy/README.md).
#
#   deploy/install.sh [--root DIR] [--bin-dir DIR]
#   DESTDIR=DIR deploy/install.sh          # the same as --root DIR
#
#   --root DIR     install under DIR instead of / (a scratch root, as CI does);
#                  the canopy user is then not created and nothing is chowned
#   --bin-dir DIR  where the built canopy-hub and canopy-spoke are (default:
#                  build/release/cmd, else build/dev/cmd, of this repository);
#                  kubectl-canopy is installed too when it is there
#
# What goes where (under the root):
#   /usr/local/bin/canopy-hub, canopy-spoke[, kubectl-canopy]    0755
#   /usr/local/lib/systemd/system/canopy-{hub,spoke,site-nats}.service  0644
#   /usr/local/lib/systemd/system/canopy-nats-auth.path, canopy-nats-reload.service  0644
#   /etc/canopy/                      0750 root:canopy
#   /etc/canopy/hub.yaml, spoke.yaml, nats-leaf.conf
#                                     0640 root:canopy, only when absent: an
#                                     edited configuration is never replaced
#                                     (nats-hub.conf is for Debian's
#                                     nats-server.service: README.md)
#   /etc/canopy/secrets/              0700 canopy:canopy (site key, NATS
#                                     credentials, kubeconfig)
#   /usr/local/share/canopy/examples/ the shipped configurations, 0644, always
#                                     current (diff them against /etc/canopy)
#   /usr/local/share/canopy/k8s/canopy-spoke.yaml  the k3s manifest, 0644
#
# Idempotent: a second run changes nothing that the first installed, except
# binaries, units and examples that differ from this tree's. It enables and
# starts nothing; it prints what to do next.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "${here}")"
root="${DESTDIR:-}"
bin_dir=""

die() {
  echo "install.sh: $*" >&2
  exit 2
}

while (($# > 0)); do
  case "$1" in
    --root)
      (($# >= 2)) || die "--root needs a directory"
      root="$2"
      shift 2
      ;;
    --root=*)
      root="${1#--root=}"
      shift
      ;;
    --bin-dir)
      (($# >= 2)) || die "--bin-dir needs a directory"
      bin_dir="$2"
      shift 2
      ;;
    --bin-dir=*)
      bin_dir="${1#--bin-dir=}"
      shift
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument \"$1\" (see --help)" ;;
  esac
done

# The root: "" and "/" both mean the real system.
root="${root%/}"
if [[ -n "${root}" ]]; then
  [[ "${root}" == /* ]] || root="$(pwd)/${root}"
  [[ -d "${root}" ]] || die "root ${root} is not a directory"
fi
real_system=0
[[ -z "${root}" ]] && real_system=1

if [[ -z "${bin_dir}" ]]; then
  for candidate in "${repo}/build/release/cmd" "${repo}/build/dev/cmd"; do
    if [[ -x "${candidate}/canopy-hub" && -x "${candidate}/canopy-spoke" ]]; then
      bin_dir="${candidate}"
      break
    fi
  done
  [[ -n "${bin_dir}" ]] ||
    die "no built canopy-hub and canopy-spoke in build/release/cmd or build/dev/cmd; build them or pass --bin-dir"
fi
for b in canopy-hub canopy-spoke; do
  [[ -f "${bin_dir}/${b}" && -x "${bin_dir}/${b}" ]] || die "${bin_dir}/${b}: not an executable file"
done

if ((real_system)) && [[ "$(id -u)" -ne 0 ]]; then
  die "installing to / needs root (or pass --root DIR for a scratch root)"
fi

# Modes are set explicitly; what mkdir and install -D create is 0755.
umask 022
changed=0
# put SRC DEST MODE: installs SRC at DEST with MODE when DEST is missing or
# differs (content or mode).
put() {
  local src="$1" dest="$2" mode="$3"
  if [[ -f "${dest}" ]] && cmp -s "${src}" "${dest}" &&
    [[ "$(stat -c %a "${dest}")" == "${mode#0}" ]]; then
    return 0
  fi
  install -D -m "${mode}" "${src}" "${dest}"
  echo "installed ${dest}"
  changed=1
}

# put_config SRC DEST: a configuration the administrator edits, installed
# only when absent.
put_config() {
  local src="$1" dest="$2"
  if [[ -e "${dest}" ]]; then
    echo "kept ${dest} (exists; the shipped one is in ${root}/usr/local/share/canopy/examples)"
    return 0
  fi
  install -D -m 0640 "${src}" "${dest}"
  ((real_system)) && chown root:canopy "${dest}"
  echo "installed ${dest}"
  changed=1
}

# make_dir DIR [MODE [OWNER]]: creates DIR when missing; a MODE (and OWNER)
# is enforced on every run. Without MODE, a directory that exists (such as
# /usr/local/bin, which a site may keep setgid staff) is left as it is.
make_dir() {
  local dir="$1" mode="${2:-}" owner="${3:-}"
  if [[ ! -d "${dir}" ]]; then
    mkdir -p "${dir}"
    echo "created ${dir}"
    changed=1
  fi
  [[ -z "${mode}" ]] || chmod "${mode}" "${dir}"
  if ((real_system)) && [[ -n "${owner}" ]]; then chown "${owner}" "${dir}"; fi
}

# The system user the daemons run as (User=canopy in the units).
if ((real_system)); then
  if getent passwd canopy >/dev/null; then
    echo "user canopy exists"
  else
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin --comment "Canopy daemons" canopy
    echo "created system user canopy"
    changed=1
  fi
else
  echo "scratch root ${root}: not creating the canopy user, files keep the installer's owner"
  echo "  (on a real machine /etc/canopy is root:canopy and /etc/canopy/secrets canopy:canopy)"
fi

make_dir "${root}/usr/local/bin"
for b in canopy-hub canopy-spoke kubectl-canopy; do
  [[ -x "${bin_dir}/${b}" ]] || continue
  put "${bin_dir}/${b}" "${root}/usr/local/bin/${b}" 0755
done

make_dir "${root}/usr/local/lib/systemd/system"
for unit in canopy-hub.service canopy-spoke.service canopy-site-nats.service \
  canopy-nats-auth.path canopy-nats-reload.service; do
  put "${here}/systemd/${unit}" "${root}/usr/local/lib/systemd/system/${unit}" 0644
done

make_dir "${root}/usr/local/share/canopy/examples" 0755
make_dir "${root}/usr/local/share/canopy/k8s" 0755
for f in hub.yaml spoke.yaml nats-leaf.conf nats-hub.conf; do
  put "${here}/${f}" "${root}/usr/local/share/canopy/examples/${f}" 0644
done
put "${here}/README.md" "${root}/usr/local/share/canopy/README.md" 0644
put "${here}/k8s/canopy-spoke.yaml" "${root}/usr/local/share/canopy/k8s/canopy-spoke.yaml" 0644

make_dir "${root}/etc/canopy" 0750 root:canopy
make_dir "${root}/etc/canopy/secrets" 0700 canopy:canopy
for f in hub.yaml spoke.yaml nats-leaf.conf; do
  put_config "${here}/${f}" "${root}/etc/canopy/${f}"
done

if ((real_system)); then
  # The binaries link Debian's shared libraries (deploy/README.md lists the
  # packages): say which are missing rather than fail at start.
  for b in canopy-hub canopy-spoke; do
    missing="$( (ldd "/usr/local/bin/${b}" 2>/dev/null || true) | awk '/not found/ { print $1 }' | tr '\n' ' ')"
    [[ -z "${missing}" ]] || echo "warning: ${b} needs libraries that are not installed: ${missing}" >&2
  done
  command -v nats-server >/dev/null ||
    echo "warning: nats-server is not installed (apt-get install nats-server)" >&2
  if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
  fi
fi

if ((changed)); then
  echo "install.sh: done"
else
  echo "install.sh: nothing to do, everything is in place"
fi
if ((real_system)); then
  cat <<'EOF'
Next: edit /etc/canopy/*.yaml, then on a hub
  systemctl enable --now nats-server canopy-hub
  (its nats-server reads /etc/nats-server.conf: install examples/nats-hub.conf there, see
  /usr/local/share/canopy/README.md)
and on a site
  systemctl enable --now canopy-site-nats canopy-spoke
EOF
fi
