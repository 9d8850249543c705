#!/bin/bash
set -u
export CONNECT_E2E_RELEASE=1
for tree in /work/ab-new /work/ab-head; do
  (cd $tree && cargo build --release -q -p connect-tests --bin content-bench && \
   NSS_TARGET_DIR=$tree/target/nss packaging/build-nss-module.sh >/dev/null && \
   cargo build --quiet -p nameserviced -p connectd --bins --target-dir $tree/target/e2e --release; echo "$tree built rc=$?")
done
for round in 1 2; do
  for tree in /work/ab-new /work/ab-head; do
    name=$(basename $tree)
    echo "round $round $name $(date)"
    (cd $tree && ./target/release/content-bench --only cold --runs 1 --no-install --out /work/ab/cold-$name-$round.md > /work/ab/cold-$name-$round.log 2>&1; echo rc=$?)
  done
done
echo done $(date)
