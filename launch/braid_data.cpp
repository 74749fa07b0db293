// braid-data: imports a corpus into the HDF5 token shards that braid-train reads.
//
//   braid-data --input FILE... --output DIR [--tokenizer gpt2|byte] [--vocab-dir DIR]
//              [--val-fraction F] [--doc-separator LINE] [--format text|llmc|raw]
//              [--vocab-size N] [--shard-tokens N]
//
// A single-process tool; it still initialises MPI because the HDF5 library is the
// parallel build, and refuses to run on more than one rank (every rank would write the
// same files). All logic is in framework/text_import.h; this file is the boundary that
// parses flags and turns errors into a message and exit status 1.
#include <mpi.h>

#include <boost/program_options.hpp>
#include <iostream>

#include "framework/text_import.h"
#include "framework/train_config.h"
#include "ops/check.h"

namespace po = boost::program_options;

namespace {

int run(int argc, char** argv) {
  braid::ImportOptions options;
  std::string format = "text";
  std::string doc_separator;
  po::options_description desc(
      "braid-data: tokenize text (or copy llm.c / nanoGPT token files) into HDF5 token "
      "shards DIR/train_NNNNNN.h5 and DIR/val_NNNNNN.h5\nOptions");
  desc.add_options()
      ("help,h", "show this help")
      ("input,i", po::value<std::vector<std::string>>(&options.inputs)->multitoken()->required(),
       "input files (text files, llm.c .bin files or raw uint16 .bin files)")
      ("output,o", po::value<std::string>(&options.output_dir)->required(),
       "output directory (created if missing; must not already hold shards)")
      ("tokenizer", po::value<std::string>(&options.tokenizer)->default_value("gpt2"),
       "gpt2 or byte (for llmc/raw: the tokenizer name recorded in the shards)")
      ("vocab-dir", po::value<std::string>(&options.vocab_dir)->default_value("vocab"),
       "directory with the GPT-2 encoder.json and vocab.bpe "
       "(get them with launch/fetch_gpt2_vocab.sh)")
      ("val-fraction", po::value<double>(&options.val_fraction)->default_value(0.05, "0.05"),
       "fraction held out for the val split, in [0, 0.5]; text: every round(1/F)-th "
       "document; llmc/raw: files named *val*, else the last F of the tokens")
      ("doc-separator", po::value<std::string>(&doc_separator),
       "text: a line equal to this ends a document (e.g. % for fortune files); "
       "default: one document per file")
      ("format", po::value<std::string>(&format)->default_value("text"),
       "text, llmc (llm.c .bin: 1024-byte header + uint16 tokens) or raw (headerless "
       "uint16 tokens, as nanoGPT's .bin)")
      ("vocab-size", po::value<int64_t>(&options.vocab_size)->default_value(50257),
       "llmc/raw: vocabulary size of the token files")
      ("shard-tokens", po::value<int64_t>(&options.shard_tokens)->default_value(100'000'000),
       "tokens per shard file");
  po::variables_map vm;
  for (int i = 1; i < argc; ++i) braid::refuse_parser_placeholders(argv[i], "argument " + std::to_string(i));
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help") || argc == 1) {
    std::cout << desc << "\n";
    return 0;
  }
  po::notify(vm);
  options.format = braid::parse_import_format(format);
  if (vm.count("doc-separator")) options.doc_separator = doc_separator;

  const braid::ImportSummary summary = braid::import_dataset(options);
  braid::print_import_summary(std::cout, summary);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int world_size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  int rc = 0;
  try {
    if (world_size != 1) {
      throw braid::InputError("braid-data is a single-process tool; run it without mpirun "
                              "(got " + std::to_string(world_size) + " ranks)");
    }
    rc = run(argc, argv);
  } catch (const braid::Error& e) {
    std::cerr << "braid-data: error: " << e.what() << "\n";
    rc = 1;
  } catch (const po::error& e) {
    std::cerr << "braid-data: error: " << e.what() << " (see braid-data --help)\n";
    rc = 1;
  } catch (const std::exception& e) {  // e.g. a filesystem error from the OS
    std::cerr << "braid-data: error: " << e.what() << "\n";
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
