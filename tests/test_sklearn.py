import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import check_estimator

from zspace.sklearn import AutoencoderTransformer


def test_passes_scikit_learn_estimator_checks():
    check_estimator(AutoencoderTransformer(epochs=3))


def test_fit_transform_inverse_on_digits(digits):
    x = digits.train.x.reshape(len(digits.train), -1).astype(np.float32)
    ae = AutoencoderTransformer(n_components=8, epochs=30, random_state=0).fit(x)
    z = ae.transform(x)
    assert z.shape == (len(x), 8)
    rec = ae.inverse_transform(z)
    assert rec.shape == x.shape
    assert np.mean((rec - x) ** 2) < 0.6 * np.var(x)        # better than the mean image
    again = AutoencoderTransformer(n_components=8, epochs=30, random_state=0).fit(x).transform(x)
    assert np.array_equal(z, again)                         # seeded: identical codes
    assert list(ae.get_feature_names_out())[:2] == ["autoencodertransformer0", "autoencodertransformer1"]


def test_in_a_pipeline(digits):
    x = digits.train.x.reshape(len(digits.train), -1).astype(np.float32)
    xt = digits.test.x.reshape(len(digits.test), -1).astype(np.float32)
    pipe = make_pipeline(AutoencoderTransformer(n_components=16, epochs=30, random_state=0),
                         LogisticRegression(max_iter=500))
    assert pipe.fit(x, digits.train.y).score(xt, digits.test.y) > 0.8


def test_bad_parameters_and_inputs():
    x = np.random.default_rng(0).random((20, 4))
    with pytest.raises(ValueError, match="larger than the input"):
        AutoencoderTransformer(n_components=5, epochs=1).fit(x)
    with pytest.raises(ValueError, match="NaN"):
        AutoencoderTransformer(epochs=1).fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    ae = AutoencoderTransformer(epochs=1).fit(x)
    with pytest.raises(ValueError, match="features"):
        ae.transform(np.zeros((2, 3)))
