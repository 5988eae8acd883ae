// A tiny DSL2 pipeline for test/integration/pipelines.test.ts: FILTER -> (COMPRESS, COUNT) -> REPORT.
// REPORT writes its shell pid to params.started and waits while params.gate exists, so a test
// can stop bucketfs during a running task.
nextflow.enable.dsl = 2

params.input = null
params.gate = null
params.started = null

process FILTER {
  input: path f
  output: tuple val(f.baseName), path("${f.baseName}.filtered.txt")
  script: "grep -v '^#' ${f} | sort > ${f.baseName}.filtered.txt"
}

process COMPRESS {
  input: tuple val(id), path(f)
  output: path "${id}.txt.gz"
  script: "gzip -c -n ${f} > ${id}.txt.gz"
}

process COUNT {
  input: tuple val(id), path(f)
  output: path "${id}.count.tsv"
  script: "awk -v id=${id} '{ n++; b += length(\$0) } END { print id \"\\t\" n \"\\t\" b }' ${f} > ${id}.count.tsv"
}

process REPORT {
  input: path counts
  path sums
  output: path "report.tsv"
  script:
  """
  echo \$\$ > '${params.started}'
  while [ -e '${params.gate}' ]; do sleep 0.2; done
  cat ${counts} | sort -k1,1 > report.tsv
  md5sum ${sums} | sort -k2 >> report.tsv
  """
}

workflow {
  filtered = FILTER(Channel.fromPath("${params.input}/*.txt"))
  REPORT(COUNT(filtered).collect(), COMPRESS(filtered).collect())
}
