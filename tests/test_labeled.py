"""Labeled-sequence readers: GUE CSV, NT FASTA '|label', BED + reference, headerless tables, IUPAC
handling, digests, and one-line errors that name the file and line."""

from __future__ import annotations

import gzip

import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.labeled import LabeledSequences, iter_records, read_labeled_sequences
from caduceus_cli.model.tokenizer import reverse_complement

from .conftest import need_data


def test_gue_csv_with_header_and_integer_labels():
    path = need_data("tasks", "gue", "tf_0", "dev.csv.gz")
    data = read_labeled_sequences(path)
    with gzip.open(path, "rt") as f:
        rows = [line.strip().split(",") for line in f][1:]
    assert len(data) == len(rows) == 1000
    assert data.sequences[:3] == [r[0] for r in rows[:3]] and data.labels[:3] == [int(r[1]) for r in rows[:3]]
    assert set(data.labels) == {0, 1} and data.names[:2] == ["1", "2"] and data.source == str(path)


def test_nt_fasta_labels_come_from_the_header():
    path = need_data("tasks", "nt_yeast_histone", "H3", "test.fna.gz")
    data = read_labeled_sequences(path)
    assert len(data) == 1497 and set(data.labels) == {0, 1}
    assert data.names[0] == "iYMR122W-A_513047" and data.labels[0] == 1
    assert {len(s) for s in data.sequences} >= {500}


def test_bed_with_label_column_reads_the_reference_and_reverse_complements_minus(tmp_path):
    genome = need_data("genomes", "sacCer3.fa.gz")
    bed = tmp_path / "regions.bed"
    bed.write_text("track name=x\nchrI\t1000\t1050\tr1\t0\t+\tpos\nchrI\t1000\t1050\tr2\t0\t-\tneg\n"
                   "chrII\t5\t25\t.\t0\t+\tpos\n")
    data = read_labeled_sequences(bed, fasta=genome)
    assert data.labels == ["pos", "neg", "pos"] and data.names == ["r1", "r2", "chrII:5-25(+)"]
    assert data.sequences[1] == reverse_complement(data.sequences[0]) and len(data.sequences[0]) == 50
    bed4 = tmp_path / "bed4.bed"
    bed4.write_text("chrI\t1000\t1050\t1\n")
    only = read_labeled_sequences(bed4, fasta=genome)
    assert only.labels == [1] and only.names == ["chrI:1000-1050"] and only.sequences == data.sequences[:1]


def test_headerless_tables_string_labels_columns_by_number_and_iupac(tmp_path):
    tsv = tmp_path / "x.tsv"
    tsv.write_text("high\tacgtRYn\tid1\nlow\tACGTT\tid2\n")
    data = read_labeled_sequences(tsv, label_column=1)
    assert data.sequences == ["ACGTNNN", "ACGTT"] and data.labels == ["high", "low"]
    csv = tmp_path / "x.csv"
    csv.write_text("id,dna,target\na,ACGT,0.5\nb,GGCC,1.5\n")
    reg = read_labeled_sequences(csv, sequence_column="dna", task="regression")
    assert reg.labels == [0.5, 1.5] and reg.names == ["a", "b"]
    two = tmp_path / "two.csv"
    two.write_text("ACGTACGT,1\nTTTT,0\n")
    assert read_labeled_sequences(two).labels == [1, 0]
    unlabeled = [r.sequence for r in iter_records(two, labels=False)]
    assert unlabeled == ["ACGTACGT", "TTTT"]


def test_digest_depends_on_sequences_and_labels_and_subset_keeps_order():
    a = LabeledSequences(["ACGT", "GGCC"], [0, 1], ["x", "y"], "mem")
    assert a.digest() == LabeledSequences(["ACGT", "GGCC"], [0, 1], ["p", "q"], "other").digest()
    assert a.digest() != LabeledSequences(["ACGT", "GGCC"], [1, 0], ["x", "y"], "mem").digest()
    assert a.subset([1, 0]).sequences == ["GGCC", "ACGT"]


@pytest.mark.parametrize("name,text,kwargs,fragment", [
    ("nolabel.csv", "sequence,foo\nACGT,1\n", {}, "line 1: no label column (the header has sequence, foo)"),
    ("bad.csv", "sequence,label\nACGT,1\nACXA,0\n", {}, "line 3: position 3: 'X' is not a nucleotide code"),
    ("empty.csv", "", {}, "no sequences (the file is empty)"),
    ("nolab.fa", ">a|1\nACGT\n>b\nACGA\n", {}, "line 3: FASTA header 'b' has no label"),
    ("reg.csv", "sequence,label\nACGT,1.5\nACGA,high\n", {"task": "regression"}, "line 3: target 'high' is not a number"),
    ("ragged.csv", "sequence,label\nACGT,1\nACGA\n", {}, "line 3: expected 2 comma-separated columns, got 1"),
    ("emptyseq.csv", "sequence,label\n,1\n", {}, "line 2: empty sequence"),
])
def test_bad_files_are_one_line_errors_naming_file_and_line(tmp_path, name, text, kwargs, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CaduceusError) as e:
        read_labeled_sequences(path, **kwargs)
    assert fragment in str(e.value) and name in str(e.value) and "\n" not in str(e.value)


def test_bed_without_label_column_or_reference(tmp_path):
    genome = need_data("genomes", "sacCer3.fa.gz")
    bed3 = tmp_path / "b3.bed"
    bed3.write_text("chrI\t10\t20\n")
    with pytest.raises(CaduceusError, match="line 1: BED without a label column"):
        read_labeled_sequences(bed3, fasta=genome)
    bed6 = tmp_path / "b6.bed"
    bed6.write_text("chrI\t10\t20\tn\t0\t+\n")
    with pytest.raises(CaduceusError, match="the last column is a strand"):
        read_labeled_sequences(bed6, fasta=genome)
    with pytest.raises(CaduceusError, match="looks like BED .*--fasta"):
        read_labeled_sequences(bed6)
    far = tmp_path / "far.bed"
    far.write_text("chrI\t10\t99999999\t1\n")
    with pytest.raises(CaduceusError, match="past the end of chrI"):
        read_labeled_sequences(far, fasta=genome)
