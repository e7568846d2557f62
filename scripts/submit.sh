#!/bin/sh
# `ray job submit --working-dir . -- ARGS` that records this checkout's commit on the search.
#
#   scripts/submit.sh search run spaces/quickstart.yaml --address auto --storage s3://bucket/runs
#
# The job runs a copy of the working directory, which may have no usable .git (left out by .rayignore or
# the upload limit, or a worktree's .git file naming a path that is not on the cluster); the commit is
# resolved here and handed to the job as $RS_GIT_COMMIT (records/schema.py git_commit), with "-dirty"
# when tracked files differ from it (the job then runs code that no commit holds).
set -eu
commit=$(git rev-parse HEAD)
git diff --quiet HEAD -- || commit="$commit-dirty"
exec ray job submit --working-dir . --runtime-env-json "{\"env_vars\": {\"RS_GIT_COMMIT\": \"$commit\"}}" -- "$@"
