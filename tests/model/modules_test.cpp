// Modules, gathering, presets and weight files of the model area. Oracles are independent of the code
// under test: a functional re-statement of method.md section 2, scalar loops, closed-form parameter
// counts, the reference fixture's key list and the entry counts of the published state dicts.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/io/checkpoint.hpp"
#include "hdssl/io/safetensors.hpp"
#include "hdssl/io/weights.hpp"
#include "hdssl/loss/infonce.hpp"
#include "hdssl/loss/reconstruction.hpp"
#include "hdssl/nn/fpn.hpp"
#include "hdssl/nn/gather.hpp"
#include "hdssl/nn/heads.hpp"
#include "hdssl/nn/memory_format.hpp"
#include "hdssl/nn/pretrain_model.hpp"
#include "hdssl/nn/projection.hpp"
#include "hdssl/presets.hpp"
#include "../test_support.hpp"

namespace F = torch::nn::functional;
using hdssl::io::NamedTensors;

namespace {

// Random values in every parameter and buffer, so that eval-mode BN is not the identity and a
// reload that silently skipped a tensor would show.
void randomize(torch::nn::Module& m, int64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& kv : hdssl::io::state_dict(m)) {
    auto& t = kv.second;
    if (t.is_floating_point()) {
      if (kv.first.find("running_var") != std::string::npos) t.uniform_(0.5, 1.5);
      else t.uniform_(-0.3, 0.3);
    } else {
      t.fill_(7);
    }
  }
}

std::map<std::string, torch::Tensor> as_map(const NamedTensors& v) { return {v.begin(), v.end()}; }

// Section 2 of method.md with functional ops, looking weights up by their reference names.
std::vector<torch::Tensor> fpn_oracle(const std::map<std::string, torch::Tensor>& w, torch::Tensor x, int S) {
  auto conv = [&](const std::string& n, const torch::Tensor& t, int pad) {
    return F::conv3d(t, w.at(n + ".weight"), F::Conv3dFuncOptions().bias(w.at(n + ".bias")).padding(pad));
  };
  auto bn = [&](const std::string& n, const torch::Tensor& t) {
    return torch::batch_norm(t, w.at(n + ".weight"), w.at(n + ".bias"), w.at(n + ".running_mean"),
                             w.at(n + ".running_var"), false, 0.1, 1e-5, false);
  };
  auto res = [&](const std::string& n, const torch::Tensor& t) {
    auto h = conv(n + ".layers.2", torch::relu(bn(n + ".layers.0", t)), 1);
    return t + conv(n + ".layers.5", torch::relu(bn(n + ".layers.3", h)), 1);
  };
  auto stack = [&](const std::string& n, const torch::Tensor& t) { return res(n + ".layers.1", res(n + ".layers.0", t)); };
  std::vector<torch::Tensor> e(S), p(S);
  x = conv("first_conv", x, 1);
  for (int i = 0; i + 1 < S; ++i) {
    e[i] = stack("left_blocks." + std::to_string(i), x);
    x = conv("down_blocks." + std::to_string(i) + ".1", F::max_pool3d(e[i], F::MaxPool3dFuncOptions(2).ceil_mode(true)), 0);
  }
  p[S - 1] = stack("bottom_block", x);
  for (int k = 0; k + 1 < S; ++k) {
    const int i = S - 2 - k;
    auto u = conv("up_blocks." + std::to_string(k) + ".0", p[i + 1], 0);
    u = u.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4);
    u = u.slice(2, 0, e[i].size(2)).slice(3, 0, e[i].size(3)).slice(4, 0, e[i].size(4));
    p[i] = stack("right_blocks." + std::to_string(k), u + conv("skip_blocks." + std::to_string(k), e[i], 0));
  }
  return p;
}

// Closed-form parameter count of FPN3d(in, base, S) from the topology in method.md section 2.
int64_t fpn_parameter_count(int64_t in, int64_t base, int64_t S) {
  auto stack = [](int64_t c) { return 2 * (2 * 2 * c + 2 * (27 * c * c + c)); };
  int64_t n = in * base * 27 + base;
  for (int64_t i = 0; i + 1 < S; ++i) {
    const int64_t c = base << i, c2 = c * 2;
    n += 2 * stack(c) + (c * c2 + c2) + (c2 * c + c) + (c * c + c);
  }
  return n + stack(base << (S - 1));
}

int64_t parameter_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

double value(const torch::Tensor& t) { return t.item<double>(); }
bool all_finite(const torch::Tensor& t) { return torch::isfinite(t).all().item<bool>(); }

std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

}  // namespace

// ---------------------------------------------------------------------------------------- FPN3d
TEST_CASE("FPN3d: state-dict keys, shapes and dtypes are exactly the reference's") {
  const auto fixture = hdssl::io::read_safetensors(hdssl::test::fixtures_dir() / "reference_fpn_b8_s4.safetensors");
  std::map<std::string, torch::Tensor> reference;
  for (const auto& kv : fixture.tensors)
    if (kv.first.rfind("backbone.", 0) == 0) reference.emplace(kv.first.substr(9), kv.second);
  hdssl::nn::FPN3d fpn(hdssl::nn::FPN3dOptions(1, 8, 4));
  const auto ours = as_map(hdssl::io::state_dict(*fpn));
  REQUIRE(ours.size() == reference.size());
  for (const auto& kv : reference) {
    CAPTURE(kv.first);
    REQUIRE(ours.count(kv.first));
    CHECK(ours.at(kv.first).sizes() == kv.second.sizes());
    CHECK((ours.at(kv.first).scalar_type() == kv.second.scalar_type()));
  }
  // Entry counts of the published state dicts (method.md section 11).
  CHECK(hdssl::io::state_dict(*hdssl::nn::FPN3d(hdssl::nn::FPN3dOptions(1, 16, 6))).size() == 340);
  CHECK(hdssl::io::state_dict(*hdssl::nn::FPN3d(hdssl::nn::FPN3dOptions(1, 32, 5))).size() == 278);
}

TEST_CASE("FPN3d: odd sizes (ceil-mode pooling, crop) match the functional statement of the method") {
  hdssl::nn::FPN3d fpn(hdssl::nn::FPN3dOptions(2, 4, 4));
  randomize(*fpn, 11);
  fpn->eval();
  torch::NoGradGuard g;
  const auto x = torch::rand({2, 2, 13, 9, 5});
  const auto ours = fpn->forward(x);
  const auto oracle = fpn_oracle(as_map(hdssl::io::state_dict(*fpn)), x, 4);
  const std::vector<std::vector<int64_t>> sizes = {{13, 9, 5}, {7, 5, 3}, {4, 3, 2}, {2, 2, 1}};
  REQUIRE(ours.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(ours[i].sizes() == torch::IntArrayRef({2, int64_t(4) << i, sizes[i][0], sizes[i][1], sizes[i][2]}));
    CHECK((ours[i] - oracle[i]).abs().max().item<double>() <= 1e-5 * oracle[i].abs().max().item<double>());
  }
  CHECK_THROWS_AS(fpn->forward(torch::rand({1, 1, 8, 8, 8})), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::nn::FPN3d(hdssl::nn::FPN3dOptions(1, 8, 1)), hdssl::ConfigError);
}

// ---------------------------------------------------------------------------------------- gather
TEST_CASE("gather_pyramid: equals scalar loops, one row per voxel, finest level first, with autograd") {
  torch::manual_seed(21);
  std::vector<torch::Tensor> pyramid = {torch::randn({3, 2, 11, 7, 5}, torch::kFloat64),
                                        torch::randn({3, 4, 6, 4, 3}, torch::kFloat64),
                                        torch::randn({3, 8, 3, 2, 2}, torch::kFloat64)};
  for (auto& l : pyramid) l.set_requires_grad(true);
  const int64_t N = 40;
  const auto index = torch::stack({torch::randint(0, 3, {N}), torch::randint(0, 11, {N}), torch::randint(0, 7, {N}),
                                   torch::randint(0, 5, {N})}, 1);
  const auto got = hdssl::nn::gather_pyramid(pyramid, index);
  REQUIRE(got.sizes() == torch::IntArrayRef({N, 14}));
  auto I = index.accessor<int64_t, 2>();
  auto G = got.accessor<double, 2>();
  int64_t mismatches = 0;
  for (int64_t r = 0; r < N; ++r) {
    int64_t col = 0;
    for (int i = 0; i < 3; ++i) {
      auto L = pyramid[i].accessor<double, 5>();
      for (int64_t c = 0; c < pyramid[i].size(1); ++c, ++col)
        mismatches += G[r][col] != L[I[r][0]][c][I[r][1] >> i][I[r][2] >> i][I[r][3] >> i];
    }
  }
  CHECK(mismatches == 0);
  // Backward scatters-adds: d sum(W * gathered) / d level = sum of W rows landing on each voxel.
  const auto weight = torch::randn({N, 14}, torch::kFloat64);
  const auto grads = torch::autograd::grad({(got * weight).sum()}, {pyramid[0], pyramid[1], pyramid[2]});
  double worst = 0;
  for (int i = 0; i < 3; ++i) {
    auto expected = torch::zeros_like(pyramid[i]);
    auto E = expected.accessor<double, 5>();
    auto W = weight.accessor<double, 2>();
    const int64_t offset = i == 0 ? 0 : (i == 1 ? 2 : 6);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t c = 0; c < pyramid[i].size(1); ++c)
        E[I[r][0]][c][I[r][1] >> i][I[r][2] >> i][I[r][3] >> i] += W[r][offset + c];
    worst = std::max(worst, (grads[i] - expected).abs().max().item<double>());
  }
  CHECK(worst < 1e-12);
}

TEST_CASE("gather_pyramid: bad indices are typed errors, not crashes") {
  std::vector<torch::Tensor> pyramid = {torch::zeros({2, 1, 4, 4, 4}), torch::zeros({2, 1, 2, 2, 2})};
  auto idx = [](std::vector<int64_t> v) { return torch::tensor(v, torch::kInt64).view({-1, 4}); };
  CHECK_NOTHROW(hdssl::nn::gather_pyramid(pyramid, idx({1, 3, 3, 3})));
  CHECK_THROWS_AS(hdssl::nn::gather_pyramid(pyramid, idx({2, 0, 0, 0})), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::nn::gather_pyramid(pyramid, idx({0, 4, 0, 0})), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::nn::gather_pyramid(pyramid, idx({0, 0, -1, 0})), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::nn::gather_pyramid(pyramid, torch::zeros({3, 4}, torch::kInt32)), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::nn::gather_pyramid(pyramid, torch::zeros({3, 3}, torch::kInt64)), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::nn::gather_pyramid({}, idx({0, 0, 0, 0})), hdssl::DataError);
  CHECK(hdssl::nn::gather_pyramid(pyramid, torch::zeros({0, 4}, torch::kInt64)).sizes() == torch::IntArrayRef({0, 2}));
}

TEST_CASE("BalancedProjection: projecting gathered vectors equals a 1x1x1 conv on the maps, then gathering") {
  torch::manual_seed(31);
  hdssl::nn::BalancedProjection proj(hdssl::nn::BalancedProjectionOptions({4, 8}, 3));
  std::vector<torch::Tensor> pyramid = {torch::randn({2, 4, 6, 6, 4}), torch::randn({2, 8, 3, 3, 2})};
  const auto index = torch::stack({torch::randint(0, 2, {20}), torch::randint(0, 6, {20}), torch::randint(0, 6, {20}),
                                   torch::randint(0, 4, {20})}, 1);
  const auto ours = proj->forward(hdssl::nn::gather_levels(pyramid, index));
  const auto params = as_map(hdssl::io::state_dict(*proj));
  CHECK(params.size() == 3);  // layers.0.{weight,bias}, layers.1.weight: bias on level 0 only
  // The oracle: 1x1x1 convs through the stored matrices `<prefix>.{i}.weight` (bias on level 0) on the
  // whole maps, then the gather.
  auto conv_then_gather = [&](const std::map<std::string, torch::Tensor>& state, const std::string& prefix) {
    std::vector<torch::Tensor> projected;
    for (int i = 0; i < 2; ++i) {
      const auto& w = state.at(prefix + "." + std::to_string(i) + ".weight");
      auto opts = F::Conv3dFuncOptions();
      if (i == 0) opts = opts.bias(state.at(prefix + ".0.bias"));
      projected.push_back(F::conv3d(pyramid[i], w.view({3, w.size(1), 1, 1, 1}), opts));
    }
    return hdssl::nn::gather_pyramid(projected, index);
  };
  CHECK(torch::allclose(ours, conv_then_gather(params, "layers"), 1e-5, 1e-6));

  hdssl::nn::BalancedProjection frozen(hdssl::nn::BalancedProjectionOptions({4, 8}, 3).frozen(true));
  CHECK(frozen->parameters().empty());
  // Frozen projections are float32 buffers: saved, loaded and moved with the model, never trained.
  const auto frozen_state = as_map(hdssl::io::state_dict(*frozen));
  CHECK(frozen_state.size() == 3);  // frozen.0.{weight,bias}, frozen.1.weight
  REQUIRE(frozen_state.count("frozen.0.weight"));
  REQUIRE(frozen_state.count("frozen.0.bias"));
  REQUIRE(frozen_state.count("frozen.1.weight"));
  const auto out = frozen->forward(hdssl::nn::gather_levels(pyramid, index));
  CHECK(out.sizes() == torch::IntArrayRef({20, 6}));
  CHECK_FALSE(out.requires_grad());
  // The same function as the 1x1x1 convs through those stored matrices.
  CHECK(torch::allclose(out, conv_then_gather(frozen_state, "frozen"), 1e-5, 1e-6));
  // A bf16 forward must not round the stored matrices.
  const auto before = frozen_state.at("frozen.1.weight").clone();
  std::vector<torch::Tensor> bf16_levels;
  for (const auto& g : hdssl::nn::gather_levels(pyramid, index)) bf16_levels.push_back(g.to(torch::kBFloat16));
  CHECK((frozen->forward(bf16_levels).scalar_type() == torch::kBFloat16));
  CHECK((frozen_state.at("frozen.1.weight").scalar_type() == torch::kFloat32));
  CHECK(torch::equal(frozen_state.at("frozen.1.weight"), before));
}

// ---------------------------------------------------------------------------------------- presets
using TinyHybrid = hdssl::policy::ModelPolicy<hdssl::policy::Pyramid<3, 4>, hdssl::policy::Balanced<8>,
                                              hdssl::policy::InfoNCEPlusReconstruction>;

TEST_CASE_TEMPLATE("presets run forward and backward on CPU at a small size", P, hdssl::presets::vox2vec,
                   hdssl::presets::hdssl, hdssl::presets::hdssl_reference, hdssl::presets::ablation_architecture,
                   hdssl::presets::ablation_loss, TinyHybrid) {
  torch::manual_seed(41);
  hdssl::nn::PretrainModel<P> model;
  model->train();
  const int64_t B = 2, N = 48;
  hdssl::nn::PretrainBatch batch;
  batch.view1 = torch::rand({B, 1, 16, 16, 8});
  batch.view2 = torch::rand({B, 1, 16, 16, 8});
  batch.target1 = torch::rand({B, 1, 16, 16, 8});
  batch.target2 = torch::rand({B, 1, 16, 16, 8});
  auto voxels = [&] {
    return torch::stack({torch::randint(0, B, {N}), torch::randint(0, 16, {N}), torch::randint(0, 16, {N}),
                         torch::randint(0, 8, {N})}, 1);
  };
  batch.voxels1 = voxels();
  batch.voxels2 = voxels();
  const auto losses = model->forward(batch);
  REQUIRE(losses.total.defined());
  CHECK(std::isfinite(value(losses.total)));
  CHECK(value(losses.info_nce) > 0);
  CHECK(losses.reconstruction.defined() == P::reconstruction);
  if constexpr (P::reconstruction) {
    CHECK(value(losses.total) ==
          doctest::Approx(value(losses.info_nce) + 10.0 * value(losses.reconstruction)).epsilon(1e-5));
  }
  losses.total.backward();
  for (const auto& p : model->named_parameters()) {
    CAPTURE(p.key());
    REQUIRE(p.value().grad().defined());
    CHECK(all_finite(p.value().grad()));
  }
  CHECK(value(model->backbone->first_conv->weight.grad().abs().sum()) > 0);

  const auto keys = as_map(hdssl::io::state_dict(*model));
  CHECK(keys.count("backbone.first_conv.weight"));
  CHECK(keys.count("proj_head.layers.6.weight"));
  CHECK(keys.count("recon_head.conv.weight") == (P::reconstruction ? 1u : 0u));
  CHECK(keys.count("balancing.layers.0.bias") == (P::balanced && !P::frozen_balancing ? 1u : 0u));
  CHECK(keys.count("balancing.frozen.0.weight") == (P::frozen_balancing ? 1u : 0u));
  CHECK(model->proj_head->options.in_features() == P::embedding_dim);
  CHECK(model->embedding_dim() == P::embedding_dim);

  if constexpr (P::reconstruction) {
    batch.target2 = torch::Tensor();
    CHECK_THROWS_AS(model->forward(batch), hdssl::DataError);
  }
}

namespace {

// Changes of the gather inputs the oracle can make on purpose, to show the comparison catches them.
enum class GatherFault { none, coarse_by_one_level, reversed_levels };

// PretrainModel::forward written out again from the same module pieces, gathering with the indexing path
// (nn::gather_levels / nn::gather_pyramid: one indexing op per level): the oracle of the fused gather.
template <class P>
hdssl::nn::PretrainLosses indexing_path_losses(hdssl::nn::PretrainModelImpl<P>& m, const hdssl::nn::PretrainBatch& b,
                                               GatherFault fault = GatherFault::none) {
  auto embed = [&](const std::vector<torch::Tensor>& pyramid, torch::Tensor voxels) {
    if (fault == GatherFault::coarse_by_one_level)  // level i read at v >> (i + 1), still in range
      voxels = torch::cat({voxels.narrow(1, 0, 1), voxels.narrow(1, 1, 3).div(2, "floor")}, 1);
    auto levels = hdssl::nn::gather_levels(pyramid, voxels);  // nn::gather_pyramid = these concatenated
    if (fault == GatherFault::reversed_levels) std::reverse(levels.begin(), levels.end());
    if constexpr (P::balanced) return m.balancing->forward(levels);
    else return torch::cat(levels, 1);
  };
  const auto p1 = m.backbone->forward(b.view1);
  const auto p2 = m.backbone->forward(b.view2);
  hdssl::nn::PretrainLosses out;
  out.info_nce = hdssl::loss::info_nce(m.proj_head->forward(embed(p1, b.voxels1)),
                                       m.proj_head->forward(embed(p2, b.voxels2)), m.options.temperature);
  out.total = out.info_nce;
  if constexpr (P::reconstruction) {
    out.reconstruction = hdssl::loss::reconstruction_mse(m.recon_head->forward(p1[0]), b.target1,
                                                         m.recon_head->forward(p2[0]), b.target2);
    out.total = out.info_nce + *m.options.reconstruction_weight * out.reconstruction;
  }
  return out;
}

// Names of every autograd node behind t (which gather built the graph).
std::set<std::string> graph_node_names(const torch::Tensor& t) {
  std::set<std::string> names;
  std::set<const torch::autograd::Node*> seen;
  std::vector<std::shared_ptr<torch::autograd::Node>> todo = {t.grad_fn()};
  while (!todo.empty()) {
    const auto n = todo.back();
    todo.pop_back();
    if (!n || !seen.insert(n.get()).second) continue;
    names.insert(n->name());
    for (const auto& e : n->next_edges()) todo.push_back(e.function);
  }
  return names;
}

bool any_name_contains(const std::set<std::string>& names, const std::string& part) {
  return std::any_of(names.begin(), names.end(), [&](const std::string& n) { return n.find(part) != std::string::npos; });
}

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-300);
}

// Worst relative difference (per tensor, max |a - b| / max |b|) of the losses and of every gradient.
struct PathDifference {
  double losses = 0, gradients = 0;
  std::string worst_gradient;
};

PathDifference path_difference(const hdssl::nn::PretrainLosses& a, const std::vector<torch::Tensor>& grads_a,
                               const hdssl::nn::PretrainLosses& b, const std::vector<torch::Tensor>& grads_b,
                               const std::vector<std::string>& names) {
  PathDifference d;
  d.losses = std::max(relative_difference(a.total, b.total), relative_difference(a.info_nce, b.info_nce));
  if (b.reconstruction.defined())
    d.losses = std::max(d.losses, relative_difference(a.reconstruction, b.reconstruction));
  for (size_t i = 0; i < names.size(); ++i) {
    const double r = relative_difference(grads_a[i], grads_b[i]);
    if (r > d.gradients || d.worst_gradient.empty()) d.gradients = r, d.worst_gradient = names[i];
  }
  return d;
}

}  // namespace

TEST_CASE_TEMPLATE("PretrainModel gathers with the fused op: losses and every gradient equal the indexing path's", P,
                   hdssl::presets::hdssl, hdssl::presets::vox2vec) {
  torch::manual_seed(43);
  hdssl::nn::PretrainModel<P> model;
  model->to(torch::kDouble);  // double: the two paths differ only in the order duplicate voxels' gradients add up
  model->train();
  const int64_t B = 2, N = 48;
  hdssl::nn::PretrainBatch batch;
  // Sizes that are no power of two: levels of 12x10x6 down to 1x1x1, each halving rounded up.
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  batch.view1 = torch::rand({B, 1, 12, 10, 6}, opts);
  batch.view2 = torch::rand({B, 1, 12, 10, 6}, opts);
  batch.target1 = torch::rand({B, 1, 12, 10, 6}, opts);
  batch.target2 = torch::rand({B, 1, 12, 10, 6}, opts);
  auto voxels = [&] {
    return torch::stack({torch::randint(0, B, {N}), torch::randint(0, 12, {N}), torch::randint(0, 10, {N}),
                         torch::randint(0, 6, {N})}, 1);
  };
  batch.voxels1 = voxels();
  batch.voxels2 = voxels();
  batch.voxels2.narrow(0, 0, 8).copy_(batch.voxels2.narrow(0, 8, 8));  // repeated rows: gradients add up

  std::vector<torch::Tensor> params, head_params;  // head: the parameters after the gather
  std::vector<std::string> names, head_names;
  for (const auto& p : model->named_parameters()) {
    names.push_back(p.key()), params.push_back(p.value());
    if (p.key().rfind("backbone.", 0) != 0) head_names.push_back(p.key()), head_params.push_back(p.value());
  }
  REQUIRE(!head_params.empty());

  const auto fused = model->forward(batch);
  // The graph really holds the fused node and no per-level indexing; the oracle's graph the reverse.
  const auto fused_graph = graph_node_names(fused.total);
  CHECK(any_name_contains(fused_graph, "GatherPyramidFunction"));
  CHECK_FALSE(any_name_contains(fused_graph, "IndexBackward"));
  const auto fused_grads = torch::autograd::grad({fused.total}, params, {}, /*retain_graph=*/true);
  const auto fused_head_grads = torch::autograd::grad({fused.total}, head_params);

  const auto oracle = indexing_path_losses(*model, batch);
  const auto oracle_graph = graph_node_names(oracle.total);
  CHECK(any_name_contains(oracle_graph, "IndexBackward"));
  CHECK_FALSE(any_name_contains(oracle_graph, "GatherPyramidFunction"));
  const auto oracle_grads = torch::autograd::grad({oracle.total}, params);

  REQUIRE(fused_grads.size() == names.size());
  const auto d = path_difference(fused, fused_grads, oracle, oracle_grads, names);
  MESSAGE("fused vs indexing gather, double: losses differ by " << d.losses << ", gradients by " << d.gradients
                                                                << " (worst: " << d.worst_gradient << ")");
  CHECK(fused.reconstruction.defined() == P::reconstruction);
  CHECK(d.losses <= 1e-13);
  CHECK(d.gradients <= 1e-11);

  // The same comparison against a gather that reads every level one scale too coarse, or (where the level
  // widths allow it) concatenates the levels coarsest first, is far outside those tolerances. (Gradients
  // of the parameters after the gather only: a backward through the backbone in double costs seconds.)
  auto faulty = [&](GatherFault fault) {
    const auto losses = indexing_path_losses(*model, batch, fault);
    return path_difference(fused, fused_head_grads, losses, torch::autograd::grad({losses.total}, head_params),
                           head_names);
  };
  const auto coarse = faulty(GatherFault::coarse_by_one_level);
  CHECK(coarse.losses > 1e-6);
  CHECK(coarse.gradients > 1e-3);
  if constexpr (P::balanced) {
    CHECK_THROWS_AS(faulty(GatherFault::reversed_levels), hdssl::DataError);  // level widths differ
  } else {
    const auto reversed = faulty(GatherFault::reversed_levels);
    CHECK(reversed.losses > 1e-6);
    CHECK(reversed.gradients > 1e-3);
  }
}

TEST_CASE("to_channels_last: 5-D parameters change layout, not values; model outputs and gradients unchanged") {
  auto make = [] {
    hdssl::nn::PretrainModel<TinyHybrid> m;
    randomize(*m, 47);
    m->train();
    return m;
  };
  auto reference = make(), model = make();
  torch::manual_seed(48);
  hdssl::nn::PretrainBatch batch;
  batch.view1 = torch::rand({2, 1, 12, 10, 6});
  batch.view2 = torch::rand({2, 1, 12, 10, 6});
  batch.target1 = torch::rand({2, 1, 12, 10, 6});
  batch.target2 = torch::rand({2, 1, 12, 10, 6});
  batch.voxels1 = torch::stack({torch::randint(0, 2, {40}), torch::randint(0, 12, {40}), torch::randint(0, 10, {40}),
                                torch::randint(0, 6, {40})}, 1);
  batch.voxels2 = batch.voxels1.flip(0);

  const auto before = model->named_parameters();
  std::vector<torch::Tensor> identity, values;
  for (const auto& p : before) identity.push_back(p.value()), values.push_back(p.value().detach().clone());
  hdssl::nn::to_channels_last(*model);
  int64_t five_d = 0, relaid = 0, changed = 0, same_object = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    const auto& p = before[i].value();
    CAPTURE(before[i].key());
    same_object += p.is_same(model->named_parameters()[before[i].key()]);
    changed += !torch::equal(p, values[i]);
    if (p.dim() == 5) {
      CHECK(p.is_contiguous(at::MemoryFormat::ChannelsLast3d));
      ++five_d;
      relaid += !p.is_contiguous();  // 1x1x1 kernels have the same strides in both layouts
    } else {
      CHECK(p.is_contiguous());
    }
  }
  CHECK(five_d > 0);
  CHECK(relaid > 0);
  CHECK(changed == 0);
  CHECK(same_object == static_cast<int64_t>(before.size()));

  auto last = batch;
  for (auto* t : {&last.view1, &last.view2, &last.target1, &last.target2})
    *t = t->contiguous(at::MemoryFormat::ChannelsLast3d);
  const auto pyramid = model->backbone->forward(last.view1);
  MESSAGE("CPU conv3d output of channels-last weights and input is "
          << (pyramid[0].is_contiguous(at::MemoryFormat::ChannelsLast3d) && !pyramid[0].is_contiguous()
                  ? "channels-last-3d" : "contiguous NCDHW"));
  const auto expected = reference->forward(batch);
  const auto got = model->forward(last);
  CHECK(value(got.total) == doctest::Approx(value(expected.total)).epsilon(1e-5));
  CHECK(value(got.reconstruction) == doctest::Approx(value(expected.reconstruction)).epsilon(1e-5));
  got.total.backward();
  expected.total.backward();
  const auto ref_params = reference->named_parameters();
  double worst = 0;
  for (const auto& p : model->named_parameters()) {
    const auto& g = p.value().grad();
    const auto& e = ref_params[p.key()].grad();
    REQUIRE(g.defined());
    worst = std::max(worst, (g - e).abs().max().item<double>() / std::max(e.abs().max().item<double>(), 1e-30));
  }
  MESSAGE("channels-last vs NCDHW, float32: worst relative gradient difference " << worst);
  CHECK(worst < 1e-4);
}

TEST_CASE("presets: full-size parameter counts (closed form of method.md section 2)") {
  hdssl::nn::PretrainModel<hdssl::presets::vox2vec> vox2vec;
  hdssl::nn::PretrainModel<hdssl::presets::hdssl> hdssl_model;
  const int64_t vox2vec_backbone = parameter_count(*vox2vec->backbone);
  const int64_t hdssl_backbone = parameter_count(*hdssl_model->backbone);
  CHECK(vox2vec_backbone == fpn_parameter_count(1, 16, 6));
  CHECK(hdssl_backbone == fpn_parameter_count(1, 32, 5));
  // Balancing: sum_i c_i * 32 weights + 32 bias; projection head on d = 160 or 1008.
  auto mlp = [](int64_t d) { return 2 * (d * d + d) + 2 * 2 * d + d * 128 + 128; };
  CHECK(parameter_count(*vox2vec) == vox2vec_backbone + mlp(1008));
  CHECK(parameter_count(*hdssl_model) == hdssl_backbone + (32 + 64 + 128 + 256 + 512) * 32 + 32 + mlp(160) + 33);
  std::cout << "parameters: vox2vec backbone " << vox2vec_backbone << ", with heads " << parameter_count(*vox2vec)
            << "; hdssl backbone " << hdssl_backbone << ", with heads " << parameter_count(*hdssl_model) << std::endl;
  CHECK(std::abs(vox2vec_backbone - 47.6e6) < 0.1e6);
  CHECK(std::abs(hdssl_backbone - 47.6e6) < 0.1e6);
}

TEST_CASE("training a tiny model lowers the loss on a fixed batch") {
  torch::manual_seed(51);
  hdssl::nn::PretrainModel<TinyHybrid> model;
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(3e-3));
  hdssl::nn::PretrainBatch batch;
  batch.view1 = torch::rand({2, 1, 12, 12, 8});
  batch.view2 = batch.view1 + 0.05 * torch::randn({2, 1, 12, 12, 8});
  batch.target1 = batch.view1;
  batch.target2 = batch.view1;
  batch.voxels1 = torch::stack({torch::randint(0, 2, {64}), torch::randint(0, 12, {64}), torch::randint(0, 12, {64}),
                                torch::randint(0, 8, {64})}, 1);
  batch.voxels2 = batch.voxels1;
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    auto loss = model->forward(batch).total;
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  CHECK(last < 0.8 * first);
}

TEST_CASE("PretrainOptions: JSON round trip and strict keys") {
  hdssl::nn::PretrainOptions o;
  o.temperature = 0.2;
  o.reconstruction_weight = 5;
  const nlohmann::json j = o;
  const auto back = j.get<hdssl::nn::PretrainOptions>();
  CHECK(back.temperature == 0.2);
  CHECK(back.reconstruction_weight == 5);
  CHECK(back.projection_dim == 128);
  try {
    nlohmann::json::parse(R"({"temprature": 0.1})").get<hdssl::nn::PretrainOptions>();
    FAIL("an unknown key must be rejected");
  } catch (const hdssl::ConfigError& e) {
    CHECK(std::string(e.what()).find("temprature") != std::string::npos);
  }
  CHECK_THROWS_AS(nlohmann::json::parse(R"({"temperature": "hot"})").get<hdssl::nn::PretrainOptions>(), hdssl::ConfigError);
  CHECK_THROWS_AS(nlohmann::json::parse(R"({"temperature": 0})").get<hdssl::nn::PretrainOptions>(), hdssl::ConfigError);
  CHECK_THROWS_AS(nlohmann::json::parse(R"({"projection_dim": 1.5})").get<hdssl::nn::PretrainOptions>(), hdssl::ConfigError);
  CHECK_THROWS_AS(nlohmann::json::parse(R"([1])").get<hdssl::nn::PretrainOptions>(), hdssl::ConfigError);
  // The loss policy's default applies when the weight is left unset; without a reconstruction term it stays
  // unset, and setting it is refused rather than silently carried.
  CHECK(hdssl::nn::PretrainModel<TinyHybrid>()->options.reconstruction_weight == 10.0);
  CHECK_FALSE(nlohmann::json::parse(R"({"reconstruction_weight": null})").get<hdssl::nn::PretrainOptions>().reconstruction_weight);
  CHECK_THROWS_AS(nlohmann::json::parse(R"({"reconstruction_weight": -1})").get<hdssl::nn::PretrainOptions>(), hdssl::ConfigError);
  CHECK_FALSE(hdssl::nn::PretrainModel<hdssl::presets::vox2vec>()->options.reconstruction_weight);
  hdssl::nn::PretrainOptions weighted;
  weighted.reconstruction_weight = 5;
  CHECK_THROWS_WITH_AS((void)hdssl::nn::PretrainModel<hdssl::presets::vox2vec>(weighted),
                       doctest::Contains("this preset has no reconstruction term"), hdssl::ConfigError);
}

// ---------------------------------------------------------------------------------------- weights
TEST_CASE("weights: an exported backbone has the reference's keys and reloads bit-exactly") {
  hdssl::test::TempDir tmp;
  hdssl::nn::FPN3d fpn(hdssl::nn::FPN3dOptions(1, 4, 3));
  randomize(*fpn, 61);
  hdssl::io::save_weights(tmp / "backbone.safetensors", *fpn, "backbone.", {{"base_channels", "4"}});
  const auto file = hdssl::io::read_safetensors(tmp / "backbone.safetensors");
  CHECK(file.metadata.at("base_channels") == "4");
  const auto nbt = file.at("backbone.left_blocks.0.layers.0.layers.0.num_batches_tracked");
  CHECK((nbt.scalar_type() == torch::kInt64));
  CHECK(nbt.dim() == 0);
  CHECK(nbt.item<int64_t>() == 7);

  hdssl::nn::FPN3d fresh(hdssl::nn::FPN3dOptions(1, 4, 3));
  hdssl::io::load_weights(tmp / "backbone.safetensors", *fresh, "backbone.");
  const auto a = hdssl::io::state_dict(*fpn), b = hdssl::io::state_dict(*fresh);
  REQUIRE(a.size() == b.size());
  REQUIRE(file.tensors.size() == a.size());
  int64_t unequal = 0;
  for (size_t i = 0; i < a.size(); ++i) unequal += !(a[i].first == b[i].first && torch::equal(a[i].second, b[i].second));
  CHECK(unequal == 0);
  // Re-exporting the reloaded model writes the same bytes.
  hdssl::io::save_weights(tmp / "again.safetensors", *fresh, "backbone.", {{"base_channels", "4"}});
  CHECK(read_bytes(tmp / "again.safetensors") == read_bytes(tmp / "backbone.safetensors"));
}

TEST_CASE("weights: damaged or mismatched files are IoErrors naming the problem") {
  hdssl::test::TempDir tmp;
  hdssl::nn::FPN3d fpn(hdssl::nn::FPN3dOptions(1, 4, 3));
  const auto good = tmp / "good.safetensors";
  hdssl::io::save_weights(good, *fpn);
  const std::string bytes = read_bytes(good);
  auto message_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const hdssl::IoError& e) {
      return e.what();
    }
    return "no IoError";
  };
  hdssl::nn::FPN3d target(hdssl::nn::FPN3dOptions(1, 4, 3));

  write_bytes(tmp / "truncated.safetensors", bytes.substr(0, bytes.size() - 100));
  CHECK(message_of([&] { hdssl::io::load_weights(tmp / "truncated.safetensors", *target); }).find("truncated.safetensors") != std::string::npos);
  write_bytes(tmp / "garbage.safetensors", std::string(8, '\xff') + "not json");
  CHECK(message_of([&] { hdssl::io::load_weights(tmp / "garbage.safetensors", *target); }) != "no IoError");
  CHECK(message_of([&] { hdssl::io::load_weights(tmp / "absent.safetensors", *target); }) != "no IoError");

  hdssl::nn::FPN3d wider(hdssl::nn::FPN3dOptions(1, 8, 3));
  CHECK(message_of([&] { hdssl::io::load_weights(good, *wider); }).find("first_conv.weight (file [4, 1, 3, 3, 3]") != std::string::npos);

  auto tensors = hdssl::io::read_safetensors(good).tensors;
  auto extra = tensors;
  extra.emplace_back("head.weight", torch::zeros({2}));
  auto missing = NamedTensors(tensors.begin() + 1, tensors.end());  // drops first_conv.weight
  CHECK(message_of([&] { hdssl::io::load_state(*target, extra); }).find("unexpected: head.weight") != std::string::npos);
  CHECK(message_of([&] { hdssl::io::load_state(*target, missing); }).find("missing: first_conv.weight") != std::string::npos);
  CHECK_NOTHROW(hdssl::io::load_state(*target, extra, "", /*strict=*/false));
  CHECK_NOTHROW(hdssl::io::load_state(*target, missing, "", /*strict=*/false));
  auto wrong_dtype = tensors;
  wrong_dtype[0].second = wrong_dtype[0].second.to(torch::kInt32);
  CHECK(message_of([&] { hdssl::io::load_state(*target, wrong_dtype); }).find("dtype") != std::string::npos);
  // All-or-nothing: a failed load leaves the model untouched.
  const auto before = target->first_conv->weight.clone();
  auto bad = tensors;
  bad.back().second = torch::zeros({1});
  CHECK_THROWS_AS(hdssl::io::load_state(*target, bad), hdssl::IoError);
  CHECK(torch::equal(before, target->first_conv->weight));
}

TEST_CASE("checkpoint: model, optimiser, RNG and step resume exactly") {
  hdssl::test::TempDir tmp;
  torch::manual_seed(71);
  auto make = [] { return hdssl::nn::PretrainModel<TinyHybrid>(); };
  auto model = make();
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-2));
  hdssl::nn::PretrainBatch batch;
  batch.view1 = torch::rand({2, 1, 8, 8, 4});
  batch.view2 = torch::rand({2, 1, 8, 8, 4});
  batch.target1 = batch.view1;
  batch.target2 = batch.view2;
  batch.voxels1 = torch::stack({torch::randint(0, 2, {16}), torch::randint(0, 8, {16}), torch::randint(0, 8, {16}),
                                torch::randint(0, 4, {16})}, 1);
  batch.voxels2 = batch.voxels1;
  auto train_step = [&](hdssl::nn::PretrainModel<TinyHybrid>& m, torch::optim::Adam& opt) {
    opt.zero_grad();
    m->forward(batch).total.backward();
    opt.step();
  };
  train_step(model, adam);
  hdssl::io::CheckpointRecord record;
  record.preset = "tiny_hybrid";
  record.options = {{"lr", 1e-2}};
  record.step = 1234;
  record.state = {{"next_batch", 1234}};
  hdssl::io::save_checkpoint(tmp / "run.ckpt", *model, adam, record);
  const auto draw_after_save = torch::rand({4});
  train_step(model, adam);  // the original continues

  torch::manual_seed(999);  // scramble the generator; the checkpoint must restore it
  auto resumed = make();
  torch::optim::Adam resumed_adam(resumed->parameters(), torch::optim::AdamOptions(1e-2));
  const auto header = hdssl::io::read_checkpoint_record(tmp / "run.ckpt");
  CHECK(header.format == hdssl::io::kCheckpointFormat);
  CHECK(header.preset == "tiny_hybrid");
  CHECK(header.options == record.options);
  CHECK(header.state == record.state);
  CHECK(hdssl::io::load_checkpoint(tmp / "run.ckpt", *resumed, resumed_adam).step == 1234);
  CHECK(torch::equal(torch::rand({4}), draw_after_save));
  train_step(resumed, resumed_adam);
  const auto a = hdssl::io::state_dict(*model), b = hdssl::io::state_dict(*resumed);
  int64_t unequal = 0;
  for (size_t i = 0; i < a.size(); ++i) unequal += !torch::equal(a[i].second, b[i].second);
  CHECK(unequal == 0);  // same step from the same state: the Adam moments were restored too

  write_bytes(tmp / "bad.ckpt", read_bytes(tmp / "run.ckpt").substr(0, 200));
  CHECK_THROWS_AS(hdssl::io::load_checkpoint(tmp / "bad.ckpt", *resumed, resumed_adam), hdssl::IoError);
  CHECK_THROWS_AS(hdssl::io::load_checkpoint(tmp / "absent.ckpt", *resumed, resumed_adam), hdssl::IoError);
  hdssl::nn::PretrainModel<hdssl::presets::ablation_architecture> other;
  torch::optim::Adam other_adam(other->parameters());
  CHECK_THROWS_AS(hdssl::io::load_checkpoint(tmp / "run.ckpt", *other, other_adam), hdssl::IoError);
}
