# Sourced by the install scripts: tools taken from Debian's packages without installing them.

# has_debs: can this machine download and unpack Debian packages?
has_debs() { command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; }

# fetch_debs DIR PACKAGE...: download the packages into DIR, refreshing the lists once on failure.
fetch_debs() {
  local dir=$1
  shift
  if ! (cd "$dir" && apt-get download -q "$@"); then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q
    (cd "$dir" && apt-get download -q "$@")
  fi
}
