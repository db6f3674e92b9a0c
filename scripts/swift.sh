#!/usr/bin/env bash
# Runs `swift ARGS...` (or $SWIFT) with a TMPDIR of its own, removed when it ends.
# Why: the Swift driver leaves an empty TemporaryDirectory.* in $TMPDIR on every
# invocation (5 or 6 per `swift build` or `swift test`), and a test process that
# is killed leaves its scratch directories; none of it should pile up in /tmp.
# Tests see the same TMPDIR, so an exit test's parent still finds its child's dirs.
set -u
scratch=$(mktemp -d "${TMPDIR:-/tmp}/layergate-swift.XXXXXX")
# As /tmp is: tests run clients as another uid (setpriv), which must reach sockets in here.
chmod 1777 "$scratch"
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM
TMPDIR=$scratch "${SWIFT:-swift}" "$@"
