// Augmentation policies: statistics of their random choices, value ranges, comparison with
// independent double-precision implementations, and determinism of augmentation sets.
#include <doctest/doctest.h>

#include <hdssl/augment/augmentation_set.hpp>
#include <hdssl/augment/bezier.hpp>
#include <hdssl/augment/inpaint.hpp>
#include <hdssl/augment/presets.hpp>
#include <hdssl/augment/vox2vec.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

using namespace hdssl::augment;
using hdssl::Purpose;
using hdssl::Rng;

namespace {

struct ThreadGuard {
  int saved = torch::get_num_threads();
  ~ThreadGuard() { torch::set_num_threads(saved); }
};

ViewRef view_of(torch::Tensor& t) {
  return ViewRef{t.data_ptr<float>(), t.size(t.dim() - 3), t.size(t.dim() - 2), t.size(t.dim() - 1)};
}

/// np.interp in double over curve samples computed here from the Bernstein form.
double reference_bezier(double v, double r1, double r2, double r3, double r4, int n, bool invert) {
  std::vector<double> xs(n), ys(n);
  for (int i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / (n - 1);
    // B(t) = sum_k C(3,k) t^k (1-t)^(3-k) P_k with P0 = (0,0), P3 = (1,1).
    xs[i] = 3 * t * std::pow(1 - t, 2) * r1 + 3 * t * t * (1 - t) * r3 + std::pow(t, 3);
    ys[i] = 3 * t * std::pow(1 - t, 2) * r2 + 3 * t * t * (1 - t) * r4 + std::pow(t, 3);
  }
  std::sort(xs.begin(), xs.end());
  std::sort(ys.begin(), ys.end());
  if (invert) std::reverse(ys.begin(), ys.end());
  if (v <= xs.front()) return ys.front();
  if (v >= xs.back()) return ys.back();
  const auto it = std::upper_bound(xs.begin(), xs.end(), v);
  const std::size_t j = static_cast<std::size_t>(it - xs.begin()) - 1;
  const double dx = xs[j + 1] - xs[j];
  return dx > 0 ? ys[j] + (v - xs[j]) * (ys[j + 1] - ys[j]) / dx : ys[j];
}

/// Direct 2-D Gaussian convolution per z slice in double, scipy "reflect" boundaries built by
/// explicit mirrored padding (independent of the separable implementation under test).
torch::Tensor reference_axial_blur(const torch::Tensor& in, double sigma) {
  const std::int64_t r = static_cast<std::int64_t>(4.0 * sigma + 0.5);
  std::vector<double> w;
  double sum = 0;
  for (std::int64_t k = -r; k <= r; ++k) {
    w.push_back(std::exp(-0.5 * k * k / (sigma * sigma)));
    sum += w.back();
  }
  for (auto& x : w) x /= sum;
  auto d = in.to(torch::kFloat64);
  const std::int64_t X = d.size(0), Y = d.size(1), Z = d.size(2);
  auto mirror = [](std::int64_t i, std::int64_t n) {
    while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - i - 1;
    return i;
  };
  auto out = torch::zeros_like(d);
  auto a = d.accessor<double, 3>();
  auto o = out.accessor<double, 3>();
  for (std::int64_t x = 0; x < X; ++x)
    for (std::int64_t y = 0; y < Y; ++y)
      for (std::int64_t z = 0; z < Z; ++z) {
        double s = 0;
        for (std::int64_t i = -r; i <= r; ++i)
          for (std::int64_t j = -r; j <= r; ++j) s += w[i + r] * w[j + r] * a[mirror(x + i, X)][mirror(y + j, Y)][z];
        o[x][y][z] = s;
      }
  return out;
}

// A policy missing `apply`, to check the detection idiom.
struct NotAnAugmentation {
  struct Options {
    static Options from_json(const nlohmann::json&) { return {}; }
    nlohmann::json to_json() const { return {}; }
  };
  using options_type = Options;
  static constexpr const char* name = "broken";
  static constexpr Purpose purpose = Purpose::user;
};

}  // namespace

static_assert(is_augmentation_v<Bezier> && is_augmentation_v<Inpaint> && is_augmentation_v<Outpaint>);
static_assert(is_augmentation_v<AxialFilter> && is_augmentation_v<GaussianNoise> && is_augmentation_v<RandomWindow>);
static_assert(!is_augmentation_v<NotAnAugmentation> && !is_augmentation_v<int>);

TEST_CASE("Bezier map: identity control points, clamping, and agreement with np.interp in double") {
  // Control points on the diagonal make the curve the identity line (x(t) = y(t)).
  const BezierMap identity(1.0 / 3, 1.0 / 3, 2.0 / 3, 2.0 / 3, 1000, false);
  for (float v : {0.0f, 0.1f, 0.25f, 0.5f, 0.77f, 0.999f, 1.0f}) CHECK(identity(v) == doctest::Approx(v).epsilon(1e-6));
  CHECK(identity(-0.5f) == 0.0f);
  CHECK(identity(1.5f) == 1.0f);
  const BezierMap inverted(1.0 / 3, 1.0 / 3, 2.0 / 3, 2.0 / 3, 1000, true);
  CHECK(inverted(0.0f) == doctest::Approx(1.0));
  CHECK(inverted(1.0f) == doctest::Approx(0.0));
  CHECK(inverted(0.25f) == doctest::Approx(0.75).epsilon(1e-5));

  Rng rng(2024);
  for (int trial = 0; trial < 20; ++trial) {
    const double r1 = rng.uniform_double(), r2 = rng.uniform_double(), r3 = rng.uniform_double(),
                 r4 = rng.uniform_double();
    const bool invert = trial % 3 == 0;
    const int n = trial % 2 ? 1024 : 97;
    const BezierMap map(r1, r2, r3, r4, n, invert);
    double max_err = 0;
    float prev = invert ? 2.0f : -1.0f;
    bool monotone = true;
    for (int i = -20; i <= 1020; ++i) {
      const float v = static_cast<float>(i) / 1000.0f;
      const float m = map(v);
      max_err = std::max(max_err, std::abs(m - reference_bezier(v, r1, r2, r3, r4, n, invert)));
      monotone = monotone && (invert ? m <= prev : m >= prev);
      prev = m;
    }
    CHECK(max_err < 2e-5);
    CHECK(monotone);
    CHECK(map(0.0f) == doctest::Approx(invert ? 1.0 : 0.0));
    CHECK(map(1.0f) == doctest::Approx(invert ? 0.0 : 1.0));
  }
  CHECK_THROWS_AS(BezierMap(0.1, 0.2, 0.3, 0.4, 1, false), hdssl::ConfigError);
}

TEST_CASE("Bezier policy: applied with its probability, values stay in [0, 1], order of voxels kept") {
  Bezier::Options o;
  std::int64_t applied = 0;
  const int trials = 400;
  for (int t = 0; t < trials; ++t) {
    auto v = torch::rand({8, 8, 4});
    auto before = v.clone();
    Rng rng(t, 0);
    Bezier::apply(view_of(v), o, rng);
    if (!torch::equal(v, before)) ++applied;
    CHECK(v.min().item<float>() >= 0.0f);
    CHECK(v.max().item<float>() <= 1.0f);
    // A monotone non-decreasing map keeps the order of any two voxels.
    auto order_before = before.flatten().argsort();
    auto sorted_after = v.flatten().index_select(0, order_before);
    CHECK((sorted_after.slice(0, 1) >= sorted_after.slice(0, 0, -1)).all().item<bool>());
  }
  CHECK(static_cast<double>(applied) / trials == doctest::Approx(0.9).epsilon(0.05));
}

TEST_CASE("In-painting boxes: count rule, size and start ranges, noise only inside the boxes") {
  Inpaint::Options o;
  auto t = torch::zeros({128, 128, 32});
  const ViewRef v = view_of(t);
  double mean_boxes = 0;
  const int trials = 3000;
  std::int64_t min_size[3] = {1000, 1000, 1000}, max_size[3] = {0, 0, 0};
  for (int trial = 0; trial < trials; ++trial) {
    Rng rng(trial, 0);
    std::uint64_t key = 0;
    const auto boxes = Inpaint::draw(v, o, rng, key);
    CHECK(boxes.size() <= 30u);
    mean_boxes += static_cast<double>(boxes.size()) / trials;
    for (const auto& b : boxes)
      for (int a = 0; a < 3; ++a) {
        const std::int64_t d = v.dim(a);
        CHECK(b.size[a] >= d / 10);
        CHECK(b.size[a] < d / 5);
        CHECK(b.start[a] >= 3);
        CHECK(b.start[a] < d - b.size[a] - 3);
        min_size[a] = std::min(min_size[a], b.size[a]);
        max_size[a] = std::max(max_size[a], b.size[a]);
      }
  }
  // Boxes continue while U < 0.95, capped at 30: E[count] = sum_{k=1..30} 0.95^k.
  double expected = 0;
  for (int k = 1; k <= 30; ++k) expected += std::pow(0.95, k);
  CHECK(mean_boxes == doctest::Approx(expected).epsilon(0.04));
  CHECK(min_size[0] == 12);
  CHECK(max_size[0] == 24);
  CHECK(min_size[2] == 3);
  CHECK(max_size[2] == 5);

  // Applying: exactly the union of the drawn boxes changes, to U[0,1) noise.
  for (int trial = 0; trial < 20; ++trial) {
    auto img = torch::full({128, 128, 32}, 5.0f);
    Rng a(trial, 0), b(trial, 0);
    std::uint64_t key = 0;
    const auto boxes = Inpaint::draw(view_of(img), o, a, key);
    Inpaint::apply(view_of(img), o, b);
    auto inside = torch::zeros({128, 128, 32}, torch::kBool);
    for (const auto& bx : boxes)
      inside.slice(0, bx.start[0], bx.start[0] + bx.size[0])
          .slice(1, bx.start[1], bx.start[1] + bx.size[1])
          .slice(2, bx.start[2], bx.start[2] + bx.size[2])
          .fill_(true);
    CHECK(torch::equal(img.ne(5.0f), inside));
    if (inside.any().item<bool>()) {
      auto noise = img.masked_select(inside);
      CHECK(noise.min().item<float>() >= 0.0f);
      CHECK(noise.max().item<float>() < 1.0f);
      if (noise.numel() > 2000) CHECK(noise.mean().item<double>() == doctest::Approx(0.5).epsilon(0.05));
    }
  }
}

TEST_CASE("Out-painting keeps its boxes of the original and fills the rest with noise") {
  Outpaint::Options o;
  o.p = 1.0;
  for (int trial = 0; trial < 10; ++trial) {
    auto img = torch::full({70, 64, 28}, 5.0f);
    Rng a(trial, 0), b(trial, 0);
    std::uint64_t key = 0;
    const auto boxes = Outpaint::draw(view_of(img), o, a, key);
    REQUIRE(!boxes.empty());
    CHECK(boxes.size() <= 5u);
    Outpaint::apply(view_of(img), o, b);
    auto kept = torch::zeros({70, 64, 28}, torch::kBool);
    for (const auto& bx : boxes) {
      for (int ax = 0; ax < 3; ++ax) {
        const std::int64_t d = img.size(ax);
        CHECK(bx.size[ax] > d - 4 * d / 7);  // d - U[3d/7, 4d/7)
        CHECK(bx.size[ax] <= d - 3 * d / 7);
      }
      kept.slice(0, bx.start[0], bx.start[0] + bx.size[0])
          .slice(1, bx.start[1], bx.start[1] + bx.size[1])
          .slice(2, bx.start[2], bx.start[2] + bx.size[2])
          .fill_(true);
    }
    CHECK(torch::equal(img.eq(5.0f), kept));
    auto noise = img.masked_select(kept.logical_not());
    CHECK(noise.min().item<float>() >= 0.0f);
    CHECK(noise.max().item<float>() < 1.0f);
  }
  // p = 0 (the presets' default) leaves the view alone.
  auto img = torch::rand({20, 20, 8});
  auto before = img.clone();
  Rng rng(1);
  Outpaint::apply(view_of(img), Outpaint::Options{}, rng);
  CHECK(torch::equal(img, before));
}

TEST_CASE("Painting on views too small for the reference ranges stays inside the view") {
  for (std::int64_t d : {1, 2, 5, 9}) {
    auto img = torch::full({d, d + 1, d}, 5.0f);
    Inpaint::Options o;
    o.continue_p = 1.0;
    Rng rng(d);
    Inpaint::apply(view_of(img), o, rng);  // would write out of bounds without the clamping rule
    CHECK(img.ne(5.0f).any().item<bool>());
    Outpaint::Options op;
    op.p = 1;
    Outpaint::apply(view_of(img), op, rng);
  }
}

TEST_CASE("Axial blur equals a direct 2-D Gaussian convolution with mirrored borders") {
  auto img = torch::rand({23, 17, 3}) * 100;
  for (double sigma : {0.3, 0.8, 1.5, 4.0}) {  // 4.0: kernel wider than the view (repeated mirroring)
    auto v = img.clone();
    hdssl::augment::detail::gaussian_axial(view_of(v), sigma);
    const auto ref = reference_axial_blur(img, sigma);
    CHECK((v.to(torch::kFloat64) - ref).abs().max().item<double>() < 1e-3);
  }
  // Blur and sharpening keep a constant image constant.
  AxialFilter::Options o;
  o.p = 1;
  for (double sharpen : {0.0, 1.0}) {
    o.sharpen_p = sharpen;
    auto c = torch::full({16, 16, 4}, -300.0f);
    Rng rng(5);
    AxialFilter::apply(view_of(c), o, rng);
    CHECK((c + 300.0f).abs().max().item<float>() < 1e-2);
  }
  // Sharpening amplifies a step edge (overshoot beyond the original range), blurring does not.
  auto step = torch::zeros({24, 24, 2});
  step.slice(0, 12).fill_(100.0f);
  auto sharp = step.clone(), blurred = step.clone();
  o.sharpen_p = 1;
  Rng r1(8), r2(8);
  AxialFilter::apply(view_of(sharp), o, r1);
  o.sharpen_p = 0;
  AxialFilter::apply(view_of(blurred), o, r2);
  CHECK(sharp.max().item<float>() > 110.0f);
  CHECK(blurred.max().item<float>() <= 100.0f + 1e-3f);
  CHECK(blurred.min().item<float>() >= -1e-3f);
}

TEST_CASE("Gaussian noise and the random window: statistics and hand-computed values") {
  GaussianNoise::Options n;
  n.p = 1;
  n.sigma_lo = n.sigma_hi = 10;
  auto img = torch::zeros({64, 64, 16});
  Rng rng(3);
  GaussianNoise::apply(view_of(img), n, rng);
  CHECK(std::abs(img.mean().item<double>()) < 0.1);
  CHECK(img.std().item<double>() == doctest::Approx(10.0).epsilon(0.01));

  // Not randomised: the fixed window [-1350, 1000] HU.
  RandomWindow::Options w;
  w.p = 0;
  auto hu = torch::tensor({-2000.0f, -1350.0f, -175.0f, 0.0f, 1000.0f, 3000.0f}).view({1, 2, 3});
  Rng rw(1);
  RandomWindow::apply(view_of(hu), w, rw);
  const std::vector<double> expect{0.0, 0.0, 1175.0 / 2350.0, 1350.0 / 2350.0, 1.0, 1.0};
  for (int i = 0; i < 6; ++i) CHECK(hu.flatten()[i].item<double>() == doctest::Approx(expect[i]).epsilon(1e-6));
  // Randomised, lo in [-1350, -1000], hi in [300, 1000]: -1000 HU maps into [0, 350 / 1650] and
  // 300 HU into [1300 / 2000, 1] (extremes at the corners of the (lo, hi) box).
  w.p = 1;
  for (int t = 0; t < 50; ++t) {
    auto x = torch::tensor({-1000.0f, -1350.0f, 300.0f}).view({1, 1, 3});
    Rng r(t);
    RandomWindow::apply(view_of(x), w, r);
    CHECK(x.flatten()[0].item<double>() >= 0.0);
    CHECK(x.flatten()[0].item<double>() <= 350.0 / 1650.0 + 1e-6);
    CHECK(x.flatten()[1].item<double>() == 0.0);
    CHECK(x.flatten()[2].item<double>() <= 1.0);
    CHECK(x.flatten()[2].item<double>() >= 1300.0 / 2000.0 - 1e-6);
  }
}

using PaintSet = AugmentationSet<Bezier, Inpaint, Outpaint>;
using CtSet = AugmentationSet<AxialFilter, GaussianNoise, RandomWindow>;

TEST_CASE_TEMPLATE("Augmentation sets are deterministic by seed, per view, and across thread counts", Set, PaintSet,
                   CtSet, HdsslAugmentations, Vox2vecAugmentations) {
  ThreadGuard guard;
  auto views = torch::rand({6, 1, 40, 36, 12}) * 1000 - 500;
  Set set(typename Set::options_type{}, 77);
  torch::set_num_threads(1);
  const auto one = set(views, 3);
  torch::set_num_threads(2);
  const auto two = set(views, 3);
  CHECK(torch::equal(one, two));
  CHECK_FALSE(torch::equal(one, views));
  CHECK_FALSE(torch::equal(one, set(views, 4)));
  // View v depends only on (seed, batch, view index): augmenting views 2..5 alone with offset 2 agrees.
  const auto tail = set(views.slice(0, 2).contiguous(), 3, 2);
  CHECK(torch::equal(tail, one.slice(0, 2)));
  Set other(typename Set::options_type{}, 78);
  CHECK_FALSE(torch::equal(one, other(views, 3)));
  // The input (the reconstruction target) is untouched.
  auto copy = views.clone();
  set(views, 3);
  CHECK(torch::equal(copy, views));
}

TEST_CASE("Augmentation set options: JSON by policy name, unknown names and keys rejected") {
  const auto json = nlohmann::json{{"bezier", {{"p", 0.25}, {"invert_p", 0.5}}}, {"inpaint", {{"max_boxes", 5}}}};
  auto set = PaintSet::from_json(json, 1);
  CHECK(set.options<Bezier>().p == 0.25);
  CHECK(set.options<Bezier>().invert_p == 0.5);
  CHECK(set.options<Inpaint>().max_boxes == 5);
  CHECK(set.options<Outpaint>().p == 0.0);
  const auto back = PaintSet::from_json(set.to_json(), 1);
  CHECK(back.to_json() == set.to_json());
  CHECK_THROWS_AS(PaintSet::from_json({{"bezeir", {{"p", 0.5}}}}), hdssl::ConfigError);
  CHECK_THROWS_AS(PaintSet::from_json({{"bezier", {{"prob", 0.5}}}}), hdssl::ConfigError);
  CHECK_THROWS_AS(PaintSet::from_json({{"bezier", {{"p", 1.5}}}}), hdssl::ConfigError);
  CHECK_THROWS_AS(PaintSet::from_json({{"inpaint", {{"max_boxes", "many"}}}}), hdssl::ConfigError);
  CHECK_THROWS_AS(CtSet::from_json({{"gaussian_noise", {{"sigma_lo", 5}, {"sigma_hi", 1}}}}), hdssl::ConfigError);
  try {
    PaintSet::from_json({{"bezier", {{"prob", 0.5}}}});
  } catch (const hdssl::ConfigError& e) {
    CHECK(std::string(e.what()).find("augment.bezier") != std::string::npos);
    CHECK(std::string(e.what()).find("prob") != std::string::npos);
  }
  // Bad tensors: typed errors.
  auto wrong = torch::rand({2, 2, 8, 8, 4});
  CHECK_THROWS_AS(set(wrong, 0), hdssl::DataError);
  CHECK_THROWS_AS(set(torch::rand({2, 1, 8, 8, 4}, torch::kFloat64), 0), hdssl::DataError);
}

TEST_CASE("Presets: the hdssl set keeps [0, 1] views in [0, 1]; the vox2vec set maps HU to [0, 1]") {
  const auto h = HdsslAugmentations(hdssl_options(), 5);
  CHECK(h.to_json() == HdsslAugmentations().to_json());  // the spelled-out values are the defaults
  CHECK(h.options<LocalPixelShuffle>().p == 0.8);
  CHECK(h.options<Bezier>().p == 0.9);
  CHECK(h.options<Inpaint>().max_boxes == 30);
  auto views = torch::rand({8, 1, 64, 64, 16});
  const auto out = h(views, 0);
  CHECK(out.min().item<float>() >= 0.0f);
  CHECK(out.max().item<float>() <= 1.0f);
  std::int64_t changed = 0;
  for (std::int64_t v = 0; v < 8; ++v) changed += torch::equal(out[v], views[v]) ? 0 : 1;
  CHECK(changed == 8);  // in-painting alone leaves a view unchanged only with probability 0.05

  const auto x = Vox2vecAugmentations(vox2vec_options(), 5);
  CHECK(x.to_json() == Vox2vecAugmentations().to_json());
  auto hu = torch::rand({6, 1, 32, 32, 8}) * 3000 - 1500;
  const auto w = x(hu, 0);
  CHECK(w.min().item<float>() >= 0.0f);
  CHECK(w.max().item<float>() <= 1.0f);
  CHECK(w.eq(0.0f).any().item<bool>());  // -1500 HU lies below every window
  CHECK(w.eq(1.0f).any().item<bool>());
}

TEST_CASE("augment_into equals the allocating call and reuses its output buffer") {
  const HdsslAugmentations set(hdssl_options(), 9);
  auto views = torch::rand({4, 1, 32, 32, 8});
  torch::Tensor out;
  set.augment_into(views, out, 2, 4);
  const float* memory = out.data_ptr<float>();
  CHECK(torch::equal(out, set(views, 2, 4)));
  set.augment_into(views, out, 3, 4);
  CHECK(out.data_ptr<float>() == memory);
  CHECK(torch::equal(out, set(views, 3, 4)));
  // In place gives the same as the copy.
  auto inplace = views.clone();
  set.apply_(inplace, 3, 4);
  CHECK(torch::equal(inplace, out));
  // A non-contiguous input is read correctly.
  auto wide = torch::rand({4, 1, 32, 32, 16});
  auto strided = wide.slice(4, 0, 16, 2);
  CHECK(torch::equal(set(strided, 1), set(strided.contiguous(), 1)));
}

TEST_CASE("Bezier map with the default 1024 samples stays close to the reference's 100000-sample map") {
  Rng rng(77);
  double worst = 0;
  int single = 0;
  for (int trial = 0; trial < 30; ++trial) {
    const double r1 = rng.uniform_double(), r2 = rng.uniform_double(), r3 = rng.uniform_double(),
                 r4 = rng.uniform_double();
    const BezierMap fine(r1, r2, r3, r4, 100000, false);  // checked against np.interp above
    const BezierMap coarse(r1, r2, r3, r4, 1024, false);
    CHECK_FALSE(fine.single_step());  // the searching path is exercised by the reference-size map
    single += coarse.single_step() ? 1 : 0;
    for (int i = 0; i <= 20000; ++i) {
      const float v = static_cast<float>(i) / 20000.0f;
      worst = std::max(worst, static_cast<double>(std::abs(fine(v) - coarse(v))));
    }
  }
  MESSAGE("max |map_1024 - map_100000| over 30 curves: " << worst << "; branch-free maps: " << single << "/30");
  CHECK(single >= 20);  // the default size takes the branch-free path for most curves
  CHECK(worst < 1e-4);
}

namespace {
// The custom policy of docs/augment.md, verbatim: the documented recipe must compile and work.
struct Gamma {
  struct Options {
    double p = 0.5, lo = 0.7, hi = 1.5;
    static Options from_json(const nlohmann::json& j) {
      Options o;
      hdssl::augment::OptionReader r(j, "augment.gamma");   // range checks, unknown keys rejected
      r.probability("p", o.p).read<double>("lo", o.lo, 0.01, 10).read<double>("hi", o.hi, 0.01, 10);
      r.finish();
      return o;
    }
    nlohmann::json to_json() const { return {{"p", p}, {"lo", lo}, {"hi", hi}}; }
  };
  using options_type = Options;
  static constexpr const char* name = "gamma";                     // JSON key in the set
  static constexpr hdssl::Purpose purpose = hdssl::Purpose::user;  // its own random stream
  static void apply(hdssl::augment::ViewRef v, const Options& o, hdssl::Rng& rng) {
    const bool on = rng.bernoulli(o.p);             // every random choice from rng, nothing else
    const double g = o.lo + (o.hi - o.lo) * rng.uniform_double();
    if (!on) return;
    for (std::int64_t i = 0; i < v.numel(); ++i) v.data[i] = std::pow(std::max(v.data[i], 0.0f), float(g));
  }
};
using WithGamma = hdssl::augment::AugmentationSet<hdssl::augment::Bezier, Gamma>;
}  // namespace

TEST_CASE("A user-defined policy (the documented Gamma example) composes into a set") {
  static_assert(is_augmentation_v<Gamma>);
  auto set = WithGamma::from_json({{"gamma", {{"p", 1.0}, {"lo", 2.0}, {"hi", 2.0}}}, {"bezier", {{"p", 0.0}}}}, 3);
  auto views = torch::rand({3, 1, 8, 8, 4});
  const auto out = set(views, 0);
  CHECK(torch::allclose(out, views.pow(2), 1e-6, 1e-7));  // gamma 2 exactly, Bezier off
  CHECK_THROWS_AS(WithGamma::from_json({{"gamma", {{"gain", 1.0}}}}), hdssl::ConfigError);
}

namespace {
// A policy with a batched path: records the streams the set hands it (views on a non-CPU device).
struct BatchedMark {
  struct Options {
    static Options from_json(const nlohmann::json& j) {
      OptionReader(j, "augment.batched_mark").finish();
      return {};
    }
    nlohmann::json to_json() const { return nlohmann::json::object(); }
  };
  using options_type = Options;
  static constexpr const char* name = "batched_mark";
  static constexpr Purpose purpose = Purpose::user;
  static inline std::vector<std::uint64_t> calls;
  static void apply(ViewRef, const Options&, Rng&) {}
  static void apply_batch(torch::Tensor views, const Options&, std::uint64_t seed, std::uint64_t batch,
                          std::uint64_t view_offset) {
    calls = {static_cast<std::uint64_t>(views.size(0)), seed, batch, view_offset};
  }
};
// A policy with the one-view path only (every built-in policy has both).
struct OneViewOnly {
  using Options = BatchedMark::Options;
  using options_type = Options;
  static constexpr const char* name = "one_view_only";
  static constexpr Purpose purpose = static_cast<Purpose>(1025);
  static void apply(ViewRef, const Options&, Rng&) {}
};
}  // namespace

TEST_CASE("Views off the CPU go through each policy's batched path, or fail with a clear error") {
  static_assert(has_batched_path_v<BatchedMark> && !has_batched_path_v<OneViewOnly>);
  // Two policies with one purpose would share their stream: such a set does not compile.
  static_assert(hdssl::augment::detail::distinct_purposes<BatchedMark, OneViewOnly, Bezier>());
  static_assert(!hdssl::augment::detail::distinct_purposes<BatchedMark, Bezier, NotAnAugmentation>());
  static_assert(has_batched_path_v<LocalPixelShuffle> && has_batched_path_v<Bezier> && has_batched_path_v<Inpaint> &&
                has_batched_path_v<Outpaint> && has_batched_path_v<AxialFilter> && has_batched_path_v<GaussianNoise> &&
                has_batched_path_v<RandomWindow>);
  auto meta = torch::empty({3, 1, 8, 8, 4}, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kMeta));
  const AugmentationSet<BatchedMark> batched({}, 5);
  torch::Tensor out;
  batched.augment_into(meta, out, 7, 3);
  CHECK(BatchedMark::calls == std::vector<std::uint64_t>{3, 5, 7, 3});
  const AugmentationSet<BatchedMark, OneViewOnly> mixed({}, 5);
  CHECK_THROWS_WITH_AS(mixed.augment_into(meta, out, 7, 3), doctest::Contains("\"one_view_only\" has no path for views on meta"),
                       hdssl::DataError);
}

TEST_CASE("augment_pair_into numbers the second batch after the first, as two augment_into calls do") {
  ThreadGuard guard;
  const HdsslAugmentations set(hdssl_options(), 12);
  auto v1 = torch::rand({5, 1, 24, 24, 8}), v2 = torch::rand({5, 1, 24, 24, 8});
  torch::Tensor a1, a2, b1, b2;
  set.augment_into(v1, a1, 6, 0);
  set.augment_into(v2, a2, 6, 5);
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    set.augment_pair_into(v1, v2, b1, b2, 6);
    CHECK(torch::equal(a1, b1));
    CHECK(torch::equal(a2, b2));
  }
  CHECK_THROWS_AS(set.augment_pair_into(v1, torch::rand({4, 1, 24, 24, 8}), b1, b2, 6), hdssl::DataError);
}
