#!/usr/bin/env nextflow
/*
 * Score a large VCF with Caduceus on a cluster: scatter, score each part, gather.
 *
 *   nextflow run examples/nextflow/main.nf --vcf calls.vcf.gz --fasta GRCh38.fa --outdir scored
 *
 * 1. split:  one part per contig that has records (or per region given with --regions), cut from the
 *            indexed input with `bcftools view --regions R --regions-overlap pos`, so a record whose
 *            POS lies in a region goes to exactly one part;
 * 2. score:  `caduceus score-variants` on every part, one task each;
 * 3. gather: `bcftools concat` of the scored parts in input order, then a tabix index.
 *
 * bcftools is the copy bundled with pysam (a dependency of caduceus-cli): the tasks need only an
 * environment where caduceus-cli is installed. The same steps as examples/snakemake/Snakefile.
 */
nextflow.enable.dsl = 2

params.vcf = null              // bgzip VCF or BCF with its .tbi/.csi index
params.fasta = null            // reference FASTA (its .fai/.gzi are used when present)
params.regions = null          // 'chr1:1-50000000,chr1:50000001-248956422,chr2'; default: one part per contig
params.outdir = 'caduceus-scored'
params.name = 'scored'
params.model = 'bundled'
params.scores = 'llr,embed_cos,embed_l2'
params.window = null
params.extra = ''
params.caduceus = 'caduceus'   // e.g. 'apptainer exec caduceus.sif caduceus'

process LIST_CONTIGS {
    input:
    path vcf
    path index

    output:
    stdout

    script:
    """
    python3 -c "import pysam; f = pysam.VariantFile('${vcf}'); print(*[c for c in f.index if next(f.fetch(c), None) is not None], sep=chr(10))"
    """
}

process SPLIT {
    tag "${part} ${region}"

    input:
    tuple val(part), val(region)
    path vcf
    path index

    output:
    tuple val(part), path("${part}.vcf.gz")

    script:
    """
    python3 -c "import pysam.bcftools as b; b.view('--regions', '${region}', '--regions-overlap', 'pos', '--output-type', 'z', '--output', '${part}.vcf.gz', '${vcf}', catch_stdout=False)"
    """
}

process SCORE {
    tag "${part}"

    input:
    tuple val(part), path(vcf_part)
    path fasta
    path fasta_indexes

    output:
    tuple val(part), path("${part}.scored.vcf.gz")

    script:
    def window = params.window ? "--window ${params.window}" : ''
    """
    OMP_NUM_THREADS=${task.cpus} ${params.caduceus} score-variants ${vcf_part} --fasta ${fasta} \\
        --model ${params.model} --scores ${params.scores} ${window} ${params.extra} -o ${part}.scored.vcf.gz
    """
}

process GATHER {
    publishDir params.outdir, mode: 'copy'

    input:
    path parts

    output:
    path "${params.name}.vcf.gz"
    path "${params.name}.vcf.gz.tbi"

    script:
    """
    python3 -c "import sys, pysam.bcftools as b; b.concat('--output-type', 'z', '--output', sys.argv[1], *sys.argv[2:], catch_stdout=False); b.index('--tbi', sys.argv[1], catch_stdout=False)" \\
        ${params.name}.vcf.gz ${parts.join(' ')}
    """
}

workflow {
    if (!params.vcf || !params.fasta) {
        error "give --vcf IN.vcf.gz (bgzip + .tbi/.csi index) and --fasta REF.fa"
    }
    vcf = file(params.vcf, checkIfExists: true)
    index = [file("${params.vcf}.tbi"), file("${params.vcf}.csi")].find { it.exists() }
    if (!index) {
        error "${params.vcf}: no .tbi/.csi index: the parts are cut by region (run `bcftools index ${params.vcf}`)"
    }
    fasta = file(params.fasta, checkIfExists: true)
    fasta_indexes = ['.fai', '.gzi'].collect { file("${params.fasta}${it}") }.findAll { it.exists() }

    regions = params.regions
        ? Channel.fromList(params.regions.toString().tokenize(','))
        : LIST_CONTIGS(vcf, index).splitText().map { it.trim() }.filter { it }
    // Part names are numbers (contig names may hold ':' or '*'); the gather step sorts by them.
    parts = regions.toList().flatMap { list ->
        list.withIndex().collect { region, i -> tuple(String.format('part%04d', i + 1), region) }
    }
    scored = SCORE(SPLIT(parts, vcf, index), fasta, fasta_indexes)
    GATHER(scored.toSortedList { a, b -> a[0] <=> b[0] }.map { sorted -> sorted.collect { it[1] } })
}
