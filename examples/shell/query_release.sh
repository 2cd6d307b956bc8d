#!/usr/bin/env bash
# Use a sematlas release with nothing but a POSIX shell, awk, gzip and od.
#
#   examples/shell/query_release.sh RELEASE_DIR [TASK]
#
# 1. verifies every file against SHA256SUMS;
# 2. counts studies per HDBSCAN cluster and, within the cluster, per task category
#    (tables/clustering_assignments.csv: id,cluster,probability,year,task_category,...);
# 3. lists the clusters of studies of TASK (default working_memory) by publication year;
# 4. reads the grid and voxel size of the task's generated map from its NIfTI header.
set -euo pipefail
release="${1:?usage: query_release.sh RELEASE_DIR [TASK]}"
task="${2:-working_memory}"
cd "$release"

echo "== checksums"
sha256sum --quiet -c SHA256SUMS && echo "all $(wc -l < SHA256SUMS) files match SHA256SUMS"

echo "== studies per cluster (-1 = noise) and their most frequent task"
awk -F, '
  NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
  { n[$col["cluster"]]++; t[$col["cluster"] SUBSEP $col["task_category"]]++ }
  END {
    for (c in n) {
      best = ""; top = 0
      for (key in t) { split(key, part, SUBSEP); if (part[1] == c && t[key] > top) { top = t[key]; best = part[2] } }
      printf "cluster %s: %d studies, most often %s (%d)\n", c, n[c], best, top
    }
  }' tables/clustering_assignments.csv | sort -t' ' -k2 -n

echo "== $task studies per year and cluster"
awk -F, -v task="$task" '
  NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
  $col["task_category"] == task { printf "%s cluster %s\n", $col["year"], $col["cluster"] }' \
  tables/clustering_assignments.csv | sort | uniq -c | awk '{ printf "%s: %d studies in cluster %s\n", $2, $1, $4 }'

echo "== NIfTI header of nifti/examples/$task.nii.gz"
header() { gzip -dc "nifti/examples/$task.nii.gz" | od -A n -t "$1" -j "$2" -N "$3"; }
read -r _ nx ny nz _ < <(header d2 40 10)
read -r _ dx _ < <(header f4 76 12)
echo "grid ${nx} x ${ny} x ${nz} voxels of ${dx} mm (MNI152)"
