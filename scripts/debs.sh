#!/usr/bin/env bash
# Debian arm64 packages for the twin, sourced by twin-rootfs.sh and rauc-build.sh:
#   debs_extract CACHE SYSROOT PACKAGE...
# downloads each package's candidate version (the arm64 one, or the architecture-independent
# one where there is no arm64 package) into CACHE once per version, all missing ones in one
# apt-get call and one download into CACHE at a time (flock), then unpacks every one into
# SYSROOT (emptied first).
debs_extract() {
  local cache=$1 sysroot=$2
  shift 2
  local packages=("$@") pkg spec version debs
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  if ! flock -n 9; then
    echo "debs: waiting for another download into $cache"
    flock 9
  fi
  local apt_opts=(-qq)
  # apt's download sandbox user cannot write to a root-owned cache.
  [ "$(id -u)" -ne 0 ] || apt_opts+=(-o APT::Sandbox::User=root)
  # One apt-cache call for every candidate version (one per package takes a second or two).
  local -A candidate=()
  local name
  while read -r name version; do
    candidate[$name]=$version
  done < <(apt-cache policy "${packages[@]/%/:arm64}" "${packages[@]}" 2>/dev/null \
    | awk '/^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) } /^  Candidate:/ { print name, $2 }')
  local -A deb_of=()
  local missing=()
  for pkg in "${packages[@]}"; do
    spec=$pkg:arm64
    version=${candidate[$spec]:-}
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
      # Architecture-independent packages (configuration files) have no :arm64.
      spec=$pkg
      version=${candidate[$spec]:-}
    fi
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
      echo "debs: Debian has no arm64 package $pkg (dpkg --add-architecture arm64 && apt-get update)" >&2
      return 1
    fi
    deb_of[$pkg]="${pkg}_${version//:/%3a}_"
    debs=("$cache/${deb_of[$pkg]}"*.deb)
    [ -e "${debs[0]}" ] || missing+=("$spec=$version")
  done
  if ((${#missing[@]})); then
    echo "debs: downloading ${#missing[@]} Debian packages into $cache"
    (cd "$cache" && apt-get download "${apt_opts[@]}" "${missing[@]}") \
      || { echo "debs: cannot download ${missing[*]}" >&2; return 1; }
  fi
  flock -u 9
  rm -rf "$sysroot"; mkdir -p "$sysroot"
  for pkg in "${packages[@]}"; do
    debs=("$cache/${deb_of[$pkg]}"*.deb)
    [ -e "${debs[0]}" ] || { echo "debs: ${deb_of[$pkg]}*.deb is not in $cache after the download" >&2; return 1; }
    dpkg-deb -x "${debs[0]}" "$sysroot"
  done
}

# The packages named in a list file: one or more per line, `#` starts a comment.
debs_list() {
  sed 's/#.*//' "$1" | tr ' ' '\n' | sed '/^$/d'
}
